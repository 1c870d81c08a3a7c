// The port workers are camlbeam_port_main (main.cpp) and an OCaml object; CMake wants a source.
