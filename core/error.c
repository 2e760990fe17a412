/* core/error.c — messages for the codes in error.h. */
#include "core/error.h"

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
