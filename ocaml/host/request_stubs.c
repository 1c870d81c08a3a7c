/* Erl_host's request externals: they forward to the hooks a host installs
   (camlbeam_request_hooks.h), and do nothing without them. */
#include "camlbeam_request_hooks.h"

#include <stddef.h>

static const struct camlbeam_request_hooks *installed = NULL;

/* The hooks' address as a nativeint; 0 uninstalls them. */
value camlbeam_request_install_hooks(value address) {
  installed = (const struct camlbeam_request_hooks *)Nativeint_val(address);
  return Val_unit;
}

/* [@@noalloc]: neither allocates nor raises. */
value camlbeam_request_set_deadline(value milliseconds) {
  if (installed != NULL) installed->set_deadline(installed->context, Long_val(milliseconds));
  return Val_unit;
}

/* [@@noalloc] */
value camlbeam_request_cancel_requested(value unit) {
  (void)unit;
  return Val_bool(installed != NULL && installed->cancel_requested(installed->context));
}
