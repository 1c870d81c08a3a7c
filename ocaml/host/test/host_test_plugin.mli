(** Loading it exports ["host_test.double"]. *)
