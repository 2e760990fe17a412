/* tests/unit/test_error.c — the error table: every code has its own message
 * and name, codes stay clear of -errno values, unknown codes are handled,
 * and only LTDI_ERR_AGAIN and LTDI_ERR_NOMEM count as transient. */
#include <criterion/criterion.h>
#include <limits.h>
#include <string.h>

#include "base/error.h"

/* The codes and names as the table declares them, for comparison with what
 * ltdi_errname reports. */
static const struct { int code; const char *name; } table[] = {
#define ROW(name, msg) {LTDI_ERR_##name, "LTDI_ERR_" #name},
    LTDI_ERRNO_MAP(ROW)
#undef ROW
};
#define N_CODES ((int)(sizeof table / sizeof table[0]))

Test(error, success) {
  cr_assert_str_eq(ltdi_strerror(0), "success");
  cr_assert_str_eq(ltdi_errname(0), "LTDI_OK");
}

Test(error, every_code_is_distinct_and_named) {
  cr_assert_eq(N_CODES, LTDI__ERR_END - LTDI__ERR_BASE - 1, "enum and table disagree");
  for (int i = 0; i < N_CODES; i++) {
    int c = table[i].code;
    cr_assert(c < 0, "codes are negative");
    const char *msg = ltdi_strerror(c), *name = ltdi_errname(c);
    cr_assert_not_null(msg);
    cr_assert(strlen(msg) > 0);
    cr_assert_str_neq(msg, "unknown error", "code %d has no message", c);
    cr_assert_str_neq(msg, "success");
    cr_assert_str_eq(name, table[i].name);
    for (int j = 0; j < i; j++) {
      cr_assert_neq(c, table[j].code);
      cr_assert_str_neq(msg, ltdi_strerror(table[j].code), "%s and %s share a message", name,
                        table[j].name);
      cr_assert_str_neq(name, ltdi_errname(table[j].code));
    }
  }
}

/* error.h promises codes "clear of -errno values", so a function that forwards
 * -errno could never be confused with an ltdi code. Linux errno values end at
 * 133 (EHWPOISON); BSD and macOS stay below that. */
Test(error, codes_clear_of_errno) {
  for (int i = 0; i < N_CODES; i++)
    cr_expect(table[i].code < -133, "%s = %d lies in the -errno range [-133, -1]", table[i].name,
              table[i].code);
}

Test(error, spot_checks) {
  cr_assert_str_eq(ltdi_strerror(LTDI_ERR_NOMEM), "out of memory");
  cr_assert_str_eq(ltdi_errname(LTDI_ERR_FORMAT), "LTDI_ERR_FORMAT");
  cr_assert_str_eq(ltdi_errname(LTDI_ERR_TRUNCATED), "LTDI_ERR_TRUNCATED");
}

Test(error, unknown_codes) {
  int unknown[] = {1, -1, -12 /* -ENOMEM */, LTDI__ERR_BASE, LTDI__ERR_END, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    cr_assert_str_eq(ltdi_strerror(unknown[i]), "unknown error", "code %d", unknown[i]);
    cr_assert_str_eq(ltdi_errname(unknown[i]), "LTDI_ERR_UNKNOWN", "code %d", unknown[i]);
  }
}

Test(error, fail_formats_the_reason_and_returns_the_code) {
  char err[16];
  cr_assert_eq(ltdi_fail(err, sizeof err, LTDI_ERR_FORMAT, "bad %s %d", "tensor", 7),
               LTDI_ERR_FORMAT);
  cr_assert_str_eq(err, "bad tensor 7");
  /* Truncated to the buffer, always terminated. */
  cr_assert_eq(ltdi_fail(err, sizeof err, LTDI_ERR_IO, "%s", "a reason much longer than 16"),
               LTDI_ERR_IO);
  cr_assert_eq(strlen(err), sizeof err - 1);
  /* No buffer: only the code. */
  cr_assert_eq(ltdi_fail(NULL, 0, LTDI_ERR_NOMEM, "x"), LTDI_ERR_NOMEM);
  err[0] = 'z';
  cr_assert_eq(ltdi_fail(err, 0, 0, "ignored"), 0);
  cr_assert_eq(err[0], 'z');
}

/* Only a failure of the moment is worth a retry; bad data never is. */
Test(error, transient_codes) {
  for (int i = 0; i < N_CODES; i++) {
    int c = table[i].code;
    int want = c == LTDI_ERR_AGAIN || c == LTDI_ERR_NOMEM;
    cr_assert_eq(ltdi_error_is_transient(c), want, "%s", table[i].name);
  }
  cr_assert_eq(ltdi_error_is_transient(0), 0);
}
