(* A plugin whose initialiser exits while CAMLBEAM_TEST_EXIT_AT_INIT is set in the worker's
   environment (the VM's: os:putenv): with it in a pool's plugins, every new OS process of
   the pool dies at start until the variable goes. *)
let () = if Sys.getenv_opt "CAMLBEAM_TEST_EXIT_AT_INIT" <> None then exit 3
