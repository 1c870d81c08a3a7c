(** Tests of Erl_host; the plugin's path is the first argument. *)
