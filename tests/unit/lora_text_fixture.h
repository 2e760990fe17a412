/* tests/unit/lora_text_fixture.h — a tiny text world for the LoRA fine-tune
 * tests (tests/unit/test_lora_train.c, test_lora_prepare.c): a random BERT
 * of tests/unit/bert_tiny.h written as an encoder folder with a small
 * vocab.txt, and a label<TAB>text file of NCLS classes whose texts mix
 * words of their own class with words every class shares, so the frozen
 * encoder separates them imperfectly and a fine-tune has something to
 * learn. */
#ifndef LTDI_TESTS_UNIT_LORA_TEXT_FIXTURE_H
#define LTDI_TESTS_UNIT_LORA_TEXT_FIXTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "tests/unit/bert_tiny.h"
#include "trainer/prepare/lora_prepare.h"

#define LTF_NCLS 6        /* classes in the text file */
#define LTF_PER 30        /* texts per class */
#define LTF_OWN 4         /* words of each class */
#define LTF_SHARED 8      /* words of every class */
#define LTF_SPECIAL 5     /* [PAD] [UNK] [CLS] [SEP] [MASK] */
#define LTF_V (LTF_SPECIAL + LTF_NCLS * LTF_OWN + LTF_SHARED)

static inline void ltf_word(char *buf, size_t n, int w) {
  /* Letters only, so WordPiece keeps each word whole. */
  snprintf(buf, n, "w%c%c", 'a' + w / 26, 'a' + w % 26);
}

/* dir/config.json, dir/model.safetensors (hidden C, 2 layers, 2 heads) and
 * dir/vocab.txt. */
static inline void ltf_write_encoder(const char *dir, int C, uint64_t seed) {
  tiny_bert tb;
  tiny_bert_init(&tb, LTF_V, C, 2, 2, C + C / 2, 24, seed);
  tiny_bert_write(&tb, dir, NULL, NULL, NULL, NULL);
  tiny_bert_free(&tb);
  char path[512];
  snprintf(path, sizeof path, "%s/vocab.txt", dir);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", f);
  for (int w = 0; w < LTF_NCLS * LTF_OWN + LTF_SHARED; w++) {
    char word[8];
    ltf_word(word, sizeof word, w);
    fprintf(f, "%s\n", word);
  }
  cr_assert_eq(fclose(f), 0);
}

/* `path`: LTF_PER texts per class "cNN", each 2..8 words, about a third of
 * them the class's own. No text repeats within a class. */
static inline void ltf_write_texts(const char *path, uint64_t seed) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  ltdi_rng rng;
  ltdi_rng_init(&rng, seed, 0x74657874u);
  for (int c = 0; c < LTF_NCLS; c++)
    for (int i = 0; i < LTF_PER; i++) {
      const int n = 2 + (int)ltdi_rng_below(&rng, 7);
      fprintf(f, "c%02d\t", c);
      for (int k = 0; k < n; k++) {
        int w = ltdi_rng_below(&rng, 3) == 0
                    ? c * LTF_OWN + (int)ltdi_rng_below(&rng, LTF_OWN)
                    : LTF_NCLS * LTF_OWN + (int)ltdi_rng_below(&rng, LTF_SHARED);
        char word[8];
        ltf_word(word, sizeof word, w);
        fprintf(f, "%s%s", k ? " " : "", word);
      }
      fprintf(f, " n%d\n", i); /* an unknown word, and no two texts alike */
    }
  cr_assert_eq(fclose(f), 0);
}

/* The tiny world's preparation (trainer/prepare/lora_prepare.h): rank-2
 * query/value adapters (alpha 4) of the encoder folder enc over the texts
 * of tsv, `tasks` tasks of ways x shots, `steps` recipe steps (lr 1e-2,
 * logit scale 10), L checkpoints, seed 9, one thread, quiet, into out. */
static inline ltdi_lora_prepare_config ltf_prepare_config(const char *enc, const char *tsv,
                                                          const char *out, int tasks, int ways,
                                                          int shots, int steps, int L) {
  ltdi_lora_prepare_config c;
  ltdi_lora_prepare_default(&c);
  c.trainer.encoder = enc;
  c.trainer.targets = "query,value";
  c.trainer.r = 2;
  c.trainer.alpha = 4.0f;
  c.trainer.max_length = 16;
  c.trainer.max_batch = 5;
  c.trainer.max_tokens = 48;
  c.train.steps = steps;
  c.train.lr = 1e-2f;
  c.train.logit_scale = 10.0f;
  c.train.init_seed = 3;
  c.train.n_checkpoints = L;
  c.text_path = tsv;
  c.tasks = tasks;
  c.ways = ways;
  c.shots = shots;
  c.seed = 9;
  c.n_threads = 1;
  c.out_path = out;
  c.quiet = 1;
  return c;
}

#endif
