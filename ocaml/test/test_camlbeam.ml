let () =
  Alcotest.run "camlbeam"
    (Test_term.tests @ Test_binary.tests @ Test_conv.tests @ Test_dispatch.tests @ Test_props.tests)
