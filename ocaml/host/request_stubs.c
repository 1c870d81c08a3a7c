/* Erl_host's request externals: they forward to the hooks a host installs
   (camlbeam_request_hooks.h), whose address Erl_host keeps per domain (Watch_hooks) and
   passes in, and do nothing without them (address 0). */
#include "camlbeam_request_hooks.h"

#include <stddef.h>

static const struct camlbeam_request_hooks *hooks_at(value address) {
  return (const struct camlbeam_request_hooks *)Nativeint_val(address);
}

/* [@@noalloc]: neither allocates nor raises. */
value camlbeam_request_set_deadline(value address, value milliseconds) {
  const struct camlbeam_request_hooks *hooks = hooks_at(address);
  if (hooks != NULL) hooks->set_deadline(hooks->context, Long_val(milliseconds));
  return Val_unit;
}

/* [@@noalloc] */
value camlbeam_request_cancel_requested(value address) {
  const struct camlbeam_request_hooks *hooks = hooks_at(address);
  return Val_bool(hooks != NULL && hooks->cancel_requested(hooks->context));
}
