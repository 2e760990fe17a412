/* trainer/data/unicode_scripts.c — lookups over the generated candidate-letter
 * table (trainer/data/unicode_letters.c): code point <-> dense candidate index,
 * and script names. Binary search over the sorted runs. */
#include "trainer/data/unicode_letters.h"

int ltdi_letters_count(void) { return ltdi__n_letters; }
int ltdi_scripts_count(void) { return ltdi__n_scripts; }

const char *ltdi_script_name(int id) {
  return (id >= 0 && id < ltdi__n_scripts) ? ltdi__script_names[id] : "";
}

int ltdi_letters_index(uint32_t cp) {
  int lo = 0, hi = ltdi__n_letter_runs - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    const ltdi__letter_run *r = &ltdi__letter_runs[mid];
    if (cp < r->first) hi = mid - 1;
    else if (cp > r->last) lo = mid + 1;
    else return r->base + (int)(cp - r->first);
  }
  return -1;
}

/* The run holding candidate `index` (runs are sorted by base too). */
static const ltdi__letter_run *run_of(int index) {
  int lo = 0, hi = ltdi__n_letter_runs - 1;
  while (lo < hi) {
    int mid = lo + (hi - lo + 1) / 2;
    if (ltdi__letter_runs[mid].base <= index) lo = mid;
    else hi = mid - 1;
  }
  return &ltdi__letter_runs[lo];
}

uint32_t ltdi_letters_codepoint(int index) {
  const ltdi__letter_run *r = run_of(index);
  return r->first + (uint32_t)(index - r->base);
}

int ltdi_letters_script(int index) { return run_of(index)->script; }
