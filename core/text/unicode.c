/* core/text/unicode.c — lookups in the generated Unicode tables
 * (core/text/unicode.h, core/text/unicode_tables.c): bisection over sorted
 * ranges, ASCII answered without searching, Hangul syllables decomposed by
 * the algorithm of Unicode's chapter 3.12. */
#include "core/text/unicode.h"

/* Index of the last range with lo <= cp, or -1. */
static ptrdiff_t uni_bisect_range(const ltdi__uni_range *r, size_t n, uint32_t cp) {
  size_t lo = 0, hi = n; /* answer in [lo, hi) after the loop: r[lo-1].lo <= cp */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (r[mid].lo <= cp)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (ptrdiff_t)lo - 1;
}

static uint32_t uni_range_value(const ltdi__uni_range *r, size_t n, uint32_t cp) {
  ptrdiff_t i = uni_bisect_range(r, n, cp);
  return (i >= 0 && cp <= r[i].hi) ? r[i].value : 0;
}

unsigned ltdi__uni_flags(uint32_t cp) {
  if (cp < 0x80)
    return ltdi__uni_ascii_flags[cp];
  return (unsigned)uni_range_value(ltdi__uni_flag_ranges, ltdi__uni_n_flag_ranges, cp);
}

unsigned ltdi__uni_ccc(uint32_t cp) {
  if (cp < 0x300) /* the first combining mark is U+0300 */
    return 0;
  return (unsigned)uni_range_value(ltdi__uni_ccc_ranges, ltdi__uni_n_ccc_ranges, cp);
}

/* Hangul syllable algorithm constants (The Unicode Standard, 3.12). */
enum {
  HANGUL_S_BASE = 0xAC00,
  HANGUL_L_BASE = 0x1100,
  HANGUL_V_BASE = 0x1161,
  HANGUL_T_BASE = 0x11A7,
  HANGUL_V_COUNT = 21,
  HANGUL_T_COUNT = 28,
  HANGUL_N_COUNT = HANGUL_V_COUNT * HANGUL_T_COUNT,
  HANGUL_S_COUNT = 19 * HANGUL_N_COUNT
};

int ltdi__uni_decompose(uint32_t cp, uint32_t *out) {
  if (cp < 0xC0) { /* the first decomposable character is U+00C0 */
    out[0] = cp;
    return 1;
  }
  if (cp >= HANGUL_S_BASE && cp < HANGUL_S_BASE + HANGUL_S_COUNT) {
    uint32_t s = cp - HANGUL_S_BASE;
    out[0] = HANGUL_L_BASE + s / HANGUL_N_COUNT;
    out[1] = HANGUL_V_BASE + (s % HANGUL_N_COUNT) / HANGUL_T_COUNT;
    if (s % HANGUL_T_COUNT == 0)
      return 2;
    out[2] = HANGUL_T_BASE + s % HANGUL_T_COUNT;
    return 3;
  }
  size_t lo = 0, hi = ltdi__uni_n_decomps;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const ltdi__uni_decomp *d = &ltdi__uni_decomps[mid];
    if (d->cp == cp) {
      for (unsigned i = 0; i < d->n; i++)
        out[i] = ltdi__uni_decomp_pool[d->off + i];
      return d->n;
    }
    if (d->cp < cp)
      lo = mid + 1;
    else
      hi = mid;
  }
  out[0] = cp;
  return 1;
}

int ltdi__uni_lower(uint32_t cp, uint32_t *out) {
  if (cp < 0x80) {
    out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    return 1;
  }
  for (size_t i = 0; i < ltdi__uni_n_lower_multis; i++) /* one entry: U+0130 */
    if (ltdi__uni_lower_multis[i].cp == cp) {
      for (uint32_t k = 0; k < ltdi__uni_lower_multis[i].n; k++)
        out[k] = ltdi__uni_lower_multis[i].out[k];
      return (int)ltdi__uni_lower_multis[i].n;
    }
  size_t lo = 0, hi = ltdi__uni_n_lower_ranges;
  while (lo < hi) { /* last range with lo <= cp */
    size_t mid = lo + (hi - lo) / 2;
    if (ltdi__uni_lower_ranges[mid].lo <= cp)
      lo = mid + 1;
    else
      hi = mid;
  }
  out[0] = cp;
  if (lo > 0) {
    const ltdi__uni_lower_range *r = &ltdi__uni_lower_ranges[lo - 1];
    if (cp <= r->hi && (cp - r->lo) % r->stride == 0)
      out[0] = (uint32_t)((int32_t)cp + r->delta);
  }
  return 1;
}

int ltdi__uni_is_cjk(uint32_t cp) {
  /* BERT's _is_chinese_char as `tokenizers` has it (its sixth range starts
   * at U+2B920, Python's BertTokenizer at U+2B820: the fast one is the
   * reference). Not all of Han: Hiragana, Katakana, Hangul are words. */
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

int ltdi__utf8_next(const uint8_t *s, size_t n, size_t *i, uint32_t *cp) {
  size_t k = *i;
  uint32_t b = s[k];
  if (b < 0x80) {
    *cp = b;
    *i = k + 1;
    return 0;
  }
  /* Length and the range of the second byte (Unicode 3.9, table 3-7), which
   * rules out overlongs, surrogates and values above U+10FFFF. */
  size_t len;
  uint32_t lo = 0x80, hi = 0xBF, v;
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
    v = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    v = b & 0x0F;
    if (b == 0xE0)
      lo = 0xA0;
    else if (b == 0xED)
      hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    v = b & 0x07;
    if (b == 0xF0)
      lo = 0x90;
    else if (b == 0xF4)
      hi = 0x8F;
  } else {
    return -1;
  }
  if (n - k < len)
    return -1;
  if (s[k + 1] < lo || s[k + 1] > hi)
    return -1;
  v = (v << 6) | (s[k + 1] & 0x3F);
  for (size_t j = 2; j < len; j++) {
    if ((s[k + j] & 0xC0) != 0x80)
      return -1;
    v = (v << 6) | (s[k + j] & 0x3F);
  }
  *cp = v;
  *i = k + len;
  return 0;
}
