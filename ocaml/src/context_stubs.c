/* The per-thread numbers behind Erl's request contexts (erl.ml, "Talking to Erlang"). */
#include <caml/mlvalues.h>

#include <stdatomic.h>

static atomic_int next_thread_slot;
static _Thread_local int thread_slot = -1;

/* The calling thread's number, given it now when [assign] and it has none; -1 without one.
   The C++ hosts call it too (cpp/host/src/host.cpp), to set the thread's context slot
   without running OCaml code. */
int camlbeam_context_thread_index(int assign)
{
  if (thread_slot < 0 && assign)
    thread_slot = atomic_fetch_add_explicit(&next_thread_slot, 1, memory_order_relaxed);
  return thread_slot;
}

/* noalloc: reads and writes no OCaml value. */
value camlbeam_context_thread_slot(value assign)
{
  return Val_int(camlbeam_context_thread_index(Bool_val(assign)));
}
