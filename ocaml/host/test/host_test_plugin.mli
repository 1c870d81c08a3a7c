(** Loading it exports ["host_test.double"] and declares the atoms
    [host_test_tag] and [host_test_declared]. *)
