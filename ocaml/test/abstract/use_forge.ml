(* The tests' forge (test/forge): not installed, so not there for plugins. *)
let forged = Forge.pid ~node:"erl@host" ~id:80 ~serial:0 ~creation:1
