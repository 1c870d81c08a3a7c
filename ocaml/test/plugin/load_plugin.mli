(** A test executable: loads the plugin named on its command line and calls
    the function it exports. *)
