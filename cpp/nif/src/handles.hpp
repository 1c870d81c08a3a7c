// OCaml values held by Erlang: Erl.Term.Handle as NIF resources of type camlbeam_handle
// (ocaml:ref(), issue 15 item 3).
//
// Each crossing of a handle to Erlang makes a new resource object, which holds a cell: a
// heap cell whose one value (the Erl.Term.handle) is a generational global root, at an
// address that does not move. The VM frees resource objects on its schedulers, where OCaml
// must not run: the destructor only queues the cell, and the thread that holds the runtime
// removes the roots (drain). A handle made with ~monitor has each of its objects monitor
// the pid; the monitor's down callback (a scheduler, no runtime either) queues the handle,
// and drain runs its on_down (once per handle: OCaml dedupes).
//
// The same handle answered twice makes two resource terms that are not =:= (keeping one
// object per handle would race its destructor); both read back as the same handle.
#pragma once

#include <caml/mlvalues.h>
#include <erl_nif.h>

#include <cstdint>
#include <optional>

namespace camlbeam::nif::handles {

// Opens the resource type: at load (ERL_NIF_RT_CREATE) and at a module upgrade
// (ERL_NIF_RT_TAKEOVER: the objects alive keep working, with this library's callbacks).
bool open(ErlNifEnv* env, ErlNifResourceFlags flags) noexcept;

// A new resource term of `env` for `handle` (an Erl.Term.handle). `monitor`: the local
// process each object monitors (the handle's monitor); if it is gone already, its
// on_down is queued as if it had just exited. On the thread holding the runtime. Throws
// std::bad_alloc.
ERL_NIF_TERM make(ErlNifEnv* env, value handle, const std::optional<ErlNifPid>& monitor);

// The Erl.Term.handle a resource term of this type holds; nullopt for any other term. The
// value stays valid while the term does (the cell roots it).
std::optional<value> get(ErlNifEnv* env, ERL_NIF_TERM term) noexcept;

// Runs the queued on_downs and releases the cells the VM gave back. On the thread holding
// the runtime, outside any request.
void drain() noexcept;

// Whether drain has anything to do (read without a lock).
bool waiting() noexcept;

struct Counts {
  std::int64_t live = 0;        // resource objects the VM holds
  std::int64_t unreleased = 0;  // cells freed by the VM, waiting for drain
};
Counts counts() noexcept;

}  // namespace camlbeam::nif::handles
