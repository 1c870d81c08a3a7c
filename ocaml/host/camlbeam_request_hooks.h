/* The hooks behind Erl_host's request externals (request_stubs.c). A host that watches its
   requests (cpp/host, host::RequestWatch) hands their address to Erl_host's
   "camlbeam.host.watch_requests" callback; until then, and in programs that link
   camlbeam.host without such a host (its dune tests), the externals do nothing. Passing
   the address at run time, rather than a C function the host calls, leaves no link-order
   dependency between the host's archives and this library's stubs. Installed and called
   on the thread that runs OCaml; the host keeps them alive until it uninstalls them. */
#ifndef CAMLBEAM_REQUEST_HOOKS_H
#define CAMLBEAM_REQUEST_HOOKS_H

#include <caml/mlvalues.h>

#ifdef __cplusplus
extern "C" {
#endif

struct camlbeam_request_hooks {
  /* The running request carries a Timeout: its deadline is that many milliseconds after
     the request began. */
  void (*set_deadline)(void *context, intnat milliseconds);
  /* Non-zero when the running request's deadline passed and its OCaml code should stop
     (the cancel signal's OCaml handler asks). */
  int (*cancel_requested)(void *context);
  void *context;
};

#ifdef __cplusplus
}
#endif

#endif
