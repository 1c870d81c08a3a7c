/* Pids, ports and references from their fields, for the tests: the blocks the C++
   converters make of NEW_PID_EXT, V4_PORT_EXT and NEWER_REFERENCE_EXT
   (cpp/conv/src/ocaml_builder.cpp; "Memory layout" in ocaml/src/term.mli). OCaml code
   cannot make them: Erl.Term keeps the three types abstract. */
#define CAML_NAME_SPACE
#include <caml/alloc.h>
#include <caml/memory.h>
#include <caml/mlvalues.h>

/* A fresh block of tag 0 holding the same immediate ints as [ints] (an int array). */
static value copy_int_array(value ints) {
  CAMLparam1(ints);
  CAMLlocal1(copy);
  const mlsize_t n = Wosize_val(ints);
  copy = caml_alloc(n, 0); /* Atom(0) when empty, as OCaml's [||] */
  for (mlsize_t i = 0; i < n; ++i) Store_field(copy, i, Field(ints, i));
  CAMLreturn(copy);
}

/* { node : string; id : int; serial : int; creation : int } */
value camlbeam_forge_pid(value node, value id, value serial, value creation) {
  CAMLparam1(node);
  CAMLlocal1(pid);
  pid = caml_alloc_small(4, 0);
  Field(pid, 0) = node;
  Field(pid, 1) = id;
  Field(pid, 2) = serial;
  Field(pid, 3) = creation;
  CAMLreturn(pid);
}

/* { node : string; id : int64; creation : int }, the id in a block of its own. */
value camlbeam_forge_port(value node, value id, value creation) {
  CAMLparam2(node, id);
  CAMLlocal2(boxed_id, port);
  boxed_id = caml_copy_int64(Int64_val(id));
  port = caml_alloc_small(3, 0);
  Field(port, 0) = node;
  Field(port, 1) = boxed_id;
  Field(port, 2) = creation;
  CAMLreturn(port);
}

/* { node : string; creation : int; ids : int array }, with an array of its own. */
value camlbeam_forge_reference(value node, value creation, value ids) {
  CAMLparam3(node, creation, ids);
  CAMLlocal2(words, reference);
  words = copy_int_array(ids);
  reference = caml_alloc_small(3, 0);
  Field(reference, 0) = node;
  Field(reference, 1) = creation;
  Field(reference, 2) = words;
  CAMLreturn(reference);
}

/* (node, creation, a copy of ids) */
value camlbeam_forge_reference_fields(value reference) {
  CAMLparam1(reference);
  CAMLlocal2(words, fields);
  words = copy_int_array(Field(reference, 2));
  fields = caml_alloc_small(3, 0);
  Field(fields, 0) = Field(reference, 0);
  Field(fields, 1) = Field(reference, 1);
  Field(fields, 2) = words;
  CAMLreturn(fields);
}
