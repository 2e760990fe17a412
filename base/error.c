/* base/error.c — messages for the codes in error.h, and ltdi_fail. */
#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>

const char *ltdi_strerror(int code) {
  switch (code) {
  case LTDI_OK: return "success";
#define LTDI__ERR_MSG(name, msg) case LTDI_ERR_##name: return msg;
  LTDI_ERRNO_MAP(LTDI__ERR_MSG)
#undef LTDI__ERR_MSG
  default: return "unknown error";
  }
}

const char *ltdi_errname(int code) {
  switch (code) {
  case LTDI_OK: return "LTDI_OK";
#define LTDI__ERR_NAME(name, msg) case LTDI_ERR_##name: return "LTDI_ERR_" #name;
  LTDI_ERRNO_MAP(LTDI__ERR_NAME)
#undef LTDI__ERR_NAME
  default: return "LTDI_ERR_UNKNOWN";
  }
}

int ltdi_error_is_transient(int code) {
  return code == LTDI_ERR_AGAIN || code == LTDI_ERR_NOMEM;
}

int ltdi_fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}
