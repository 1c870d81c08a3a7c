/* Erl_host's request externals: they forward to the hooks a host installs
   (camlbeam_request_hooks.h), and do nothing without them. Each domain has its own hooks
   (OCaml 5: the nif transport runs requests on several domains, each watched by its own
   host::RequestWatch); OCaml 4 has one. A thread that borrows a domain (Caml_state is that
   domain's) uses the domain's hooks. */
#include "camlbeam_request_hooks.h"

#include <caml/domain_state.h>
#include <caml/version.h>

#include <stddef.h>

#if OCAML_VERSION_MAJOR >= 5
/* OCaml 5.3's default limit on domains; a domain beyond it has no hooks. */
#define HOOKED_DOMAINS 128
#define DOMAIN_INDEX (Caml_state->id)
#else
#define HOOKED_DOMAINS 1
#define DOMAIN_INDEX 0
#endif

/* Read and written only by threads that hold the domain: its lock orders them. */
static const struct camlbeam_request_hooks *installed[HOOKED_DOMAINS];

static const struct camlbeam_request_hooks *domain_hooks(void) {
  const int index = DOMAIN_INDEX;
  return index >= 0 && index < HOOKED_DOMAINS ? installed[index] : NULL;
}

/* The hooks' address as a nativeint, for the calling domain; 0 uninstalls them. */
value camlbeam_request_install_hooks(value address) {
  const int index = DOMAIN_INDEX;
  if (index >= 0 && index < HOOKED_DOMAINS)
    installed[index] = (const struct camlbeam_request_hooks *)Nativeint_val(address);
  return Val_unit;
}

/* [@@noalloc]: neither allocates nor raises. */
value camlbeam_request_set_deadline(value milliseconds) {
  const struct camlbeam_request_hooks *hooks = domain_hooks();
  if (hooks != NULL) hooks->set_deadline(hooks->context, Long_val(milliseconds));
  return Val_unit;
}

/* [@@noalloc] */
value camlbeam_request_cancel_requested(value unit) {
  const struct camlbeam_request_hooks *hooks = domain_hooks();
  (void)unit;
  return Val_bool(hooks != NULL && hooks->cancel_requested(hooks->context));
}
