let () = Erl.export "host_test.double" Erl.Conv.(int @-> returning int) (fun n -> 2 * n)
