#!/usr/bin/env python3
"""scripts/gen_unicode_tables.py — generates core/text/unicode_tables.c, the
Unicode data of BERT's tokenizer (core/text/tokenizer.c, core/text/unicode.h).

Regenerate with (from the repository root; needs the reference venv, whose
`tokenizers` package is the behaviour the tables must reproduce):

    .venv-ref/bin/python scripts/gen_unicode_tables.py > core/text/unicode_tables.c

The tables start from the Python `unicodedata` of the interpreter that runs
this script (its Unicode version goes into the generated header):

  flags     DROP   Cc, Cf, Co except \\t \\n \\r, plus U+FFFD (BertNormalizer's
                   clean_text removes them)
            SPACE  the White_Space property (Zs, Zl, Zp, U+0009..U+000D,
                   U+0085); clean_text maps it to ' ' and the pre-tokenizer
                   splits on it
            PUNCT  General_Category P*, plus ASCII 33-47, 58-64, 91-96,
                   123-126 (BertPreTokenizer isolates it)
            MN     General_Category Mn (strip_accents drops it after NFD)
  ccc       Canonical_Combining_Class, for NFD's canonical reordering
  decomp    the full canonical decomposition (NFD of one character, so
            applied recursively), Hangul syllables left to the algorithm
  lower     str.lower() of one character (Rust's char::to_lowercase, which
            `tokenizers` uses, agrees wherever it is used; see the replay)

The Rust crates behind `tokenizers` (unicode_categories for Cc/Cf/Co, P* and
Mn) carry older Unicode data than Python's, so some code points differ: the
script asks the reference for each code point's behaviour and, where it
differs, takes the reference's (the generated header lists these overrides).
It then replays, for every code point and for the lowercase and cased
configurations, the C algorithm on these tables against the reference's
BertNormalizer + BertPreTokenizer, and fails when one differs.
"""
import sys
import unicodedata as ud

from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

DROP, SPACE, PUNCT, MN = 1, 2, 4, 8
HANGUL_S, HANGUL_N = 0xAC00, 11172
CJK = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
       (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)]
# (Rust's BertNormalizer starts the sixth range at U+2B920 where Python's
# BertTokenizer._is_chinese_char has U+2B820; the reference is the Rust one.)
WHITE_SPACE_EXTRA = set(range(0x09, 0x0E)) | {0x85}


def code_points():
    """Every scalar value (surrogates cannot be UTF-8, so they never reach here)."""
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def is_cjk(c):
    return any(lo <= c <= hi for lo, hi in CJK)


def is_ascii_punct(c):
    return 33 <= c <= 47 or 58 <= c <= 64 or 91 <= c <= 96 or 123 <= c <= 126


def unicodedata_flags(c):
    cat = ud.category(chr(c))
    f = 0
    if (cat in ("Cc", "Cf", "Co") and c not in (9, 10, 13)) or c == 0xFFFD:
        f |= DROP
    if cat in ("Zs", "Zl", "Zp") or c in WHITE_SPACE_EXTRA:
        f |= SPACE
    if cat.startswith("P") or is_ascii_punct(c):
        f |= PUNCT
    if cat == "Mn":
        f |= MN
    return f


def log(*a):
    print(*a, file=sys.stderr)


# ---- the reference's per-character behaviour -----------------------------------

CLEAN = BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False,
                       lowercase=False)
STRIP = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True,
                       lowercase=False)
PRE = BertPreTokenizer()


def reference_flags(flags, decomp):
    """Flags as the reference behaves; `decomp` tells which code points decompose."""
    out = dict(flags)
    for c in code_points():
        ch = chr(c)
        f = 0
        r = CLEAN.normalize_str(ch)
        if r == "":
            f |= DROP
        elif c == 0x20 or r == " ":
            f |= SPACE
        if not f & DROP:
            pieces = PRE.pre_tokenize_str("a" + ch + "a")
            if len(pieces) == 3:
                f |= PUNCT
            elif len(pieces) == 2:
                f |= SPACE
        # Other bits of DROP chars never matter (clean_text removes them
        # first; the tables keep DROP alone): keep unicodedata's, so that the
        # overrides listed are real differences.
        if f & DROP:
            f |= flags[c] & (SPACE | PUNCT)
        if c in decomp or HANGUL_S <= c < HANGUL_S + HANGUL_N:
            f |= flags[c] & MN  # unused: NFD replaces it; its pieces are checked below
        else:
            s = STRIP.normalize_str(ch)
            if s == "":
                f |= MN
            elif s != ch:
                sys.exit("U+%04X: strip_accents gives %r, no decomposition known" % (c, s))
        out[c] = f
    # Decompositions the reference does not know (characters newer than its
    # data) are dropped; any other difference is an error.
    undecomposed = []
    for c, d in decomp.items():
        s = STRIP.normalize_str(chr(c))
        want = "".join(chr(x) for x in d if not out[x] & MN)
        if s == chr(c) and s != want:
            undecomposed.append(c)
        elif s != want:
            sys.exit("U+%04X: strip_accents gives %r, NFD without Mn %r" % (c, s, want))
    return out, undecomposed


def reference_ccc_member(ccc):
    """Code points with ccc != 0 that the reference treats as ccc 0: between
    U+1D16D (226) and U+1D165 (216), a combining character keeps the run
    going and NFD reorders the two; a starter stops it."""
    gone = []
    for c, v in ccc.items():
        if v == 0:
            continue
        out = STRIP.normalize_str("a\U0001D16D" + chr(c) + "\U0001D165")
        order = [x for x in out if x in ("\U0001D16D", "\U0001D165")]
        if order != ["\U0001D165", "\U0001D16D"]:
            gone.append(c)
    return gone


# ---- the C algorithm, replayed in Python ------------------------------------------


class Model:
    """core/text/tokenizer.c's normalize + pre-tokenize, on the final tables."""

    def __init__(self, flags, ccc, decomp, lower):
        self.flags, self.ccc, self.decomp, self.lower = flags, ccc, decomp, lower

    def nfd(self, c):
        if HANGUL_S <= c < HANGUL_S + HANGUL_N:
            return [ord(x) for x in ud.normalize("NFD", chr(c))]
        return self.decomp.get(c, [c])

    def words(self, text, lowercase):
        words, word, run = [], [], 0

        def end():
            nonlocal word, run
            if word:
                words.append("".join(map(chr, word)))
            word, run = [], 0

        def emit(x, cc):
            nonlocal run
            f = self.flags.get(x, 0)
            if f & SPACE:
                end()
            elif f & PUNCT:
                end()
                words.append(chr(x))
            else:
                if cc == 0:
                    word.append(x)
                    run = len(word)
                else:  # stable insertion among this run's survivors
                    i = len(word)
                    while i > run and self.ccc.get(word[i - 1], 0) > cc:
                        i -= 1
                    word.insert(i, x)

        for ch in text:
            c = ord(ch)
            f = self.flags.get(c, 0)
            if f & DROP:
                continue
            if f & SPACE:
                end()
                continue
            cjk = is_cjk(c)  # a word of its own, after NFD (U+F900.. decompose)
            if cjk:
                end()
            if not lowercase:
                emit(c, 0)
            else:
                for d in self.nfd(c):
                    cc = self.ccc.get(d, 0)
                    if self.flags.get(d, 0) & MN:
                        if cc == 0:
                            run = len(word)
                        continue
                    for x in self.lower.get(d, [d]):
                        emit(x, cc)
            if cjk:
                end()
        end()
        return words


def check(model):
    """Every code point in context, both configurations, against the reference."""
    bad = 0
    for lowercase in (True, False):
        norm = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                              lowercase=lowercase)
        for c in code_points():
            for text in ("A" + chr(c) + "b", chr(c) + "\u0301x"):
                want = [w for w, _ in PRE.pre_tokenize_str(norm.normalize_str(text))]
                got = model.words(text, lowercase)
                if want != got:
                    bad += 1
                    if bad <= 20:
                        log("mismatch U+%04X lowercase=%d: reference %r, tables %r"
                            % (c, lowercase, want, got))
    # Canonical reordering among the marks that survive strip_accents.
    survivors = [c for c, v in model.ccc.items() if v and not model.flags.get(c, 0) & MN]
    norm = BertNormalizer(lowercase=True)
    for a in survivors:
        for b in survivors:
            for mid in ("", "\u0301", "\u034f"):
                text = "x" + chr(a) + mid + chr(b)
                want = [w for w, _ in PRE.pre_tokenize_str(norm.normalize_str(text))]
                if want != model.words(text, True):
                    bad += 1
                    log("reorder mismatch %r" % text)
    return bad


# ---- table building -----------------------------------------------------------------


def ranges(values):
    """[(lo, hi, v)] of maximal runs of equal non-zero values of a dict."""
    out = []
    for c in sorted(values):
        v = values[c]
        if not v:
            continue
        if out and out[-1][1] == c - 1 and out[-1][2] == v:
            out[-1][1] = c
        else:
            out.append([c, c, v])
    return out


def lower_ranges(single):
    """[(lo, hi, delta, stride)], disjoint: runs where every stride-th code point
    from lo maps to itself + delta (stride 2 for the alternating upper/lower
    pairs of Latin Extended, Cyrillic, ...; the code points in between map to
    nothing, so binary search on lo finds the one range that may hold a code
    point)."""
    out, done = [], set()
    for c in sorted(single):
        if c in done:
            continue
        delta = single[c] - c
        best_hi, best_stride = c, 1
        for stride in (1, 2):
            hi = c
            while True:
                nxt = hi + stride
                if single.get(nxt) != nxt + delta or nxt in done:
                    break
                if stride == 2 and hi + 1 in single:
                    break
                hi = nxt
            if hi > best_hi:
                best_hi, best_stride = hi, stride
        for x in range(c, best_hi + 1, best_stride):
            done.add(x)
        out.append((c, best_hi, delta, best_stride))
    return out


def spans(cps):
    """"U+XXXX" or "U+XXXX..U+YYYY" for the runs of a set of code points."""
    return [("U+%04X" % lo) if lo == hi else ("U+%04X..U+%04X" % (lo, hi))
            for lo, hi, _ in ranges({c: 1 for c in cps})]


def wrap(words, width=74):
    """Words joined into comment lines of the generated header."""
    if not words:
        return "(none)"
    lines, cur = [], ""
    for x in words:
        if cur and len(cur) + 1 + len(x) > width:
            lines.append(cur)
            cur = x
        else:
            cur = (cur + " " + x) if cur else x
    lines.append(cur)
    return "\n *   ".join(lines)


def hexlist(xs, per=8, fmt="0x%05X"):
    lines, cur = [], []
    for x in xs:
        cur.append(x)
        if len(cur) == per:
            lines.append("  " + " ".join(cur))
            cur = []
    if cur:
        lines.append("  " + " ".join(cur))
    return "\n".join(lines)


def main():
    cps = code_points()
    flags = {c: unicodedata_flags(c) for c in cps}
    decomp = {}
    for c in cps:
        if HANGUL_S <= c < HANGUL_S + HANGUL_N:
            continue
        d = ud.normalize("NFD", chr(c))
        if d != chr(c):
            decomp[c] = [ord(x) for x in d]
    ccc = {c: ud.combining(chr(c)) for c in cps}
    lower = {}
    for c in cps:
        low = chr(c).lower()
        if low != chr(c):
            lower[c] = [ord(x) for x in low]

    log("unicodedata %s: probing the reference" % ud.unidata_version)
    ref, undecomposed = reference_flags(flags, decomp)
    for c in undecomposed:
        del decomp[c]
    overrides = {}
    for c in cps:
        if ref[c] != flags[c]:
            overrides[c] = (flags[c], ref[c])
    flags = ref
    gone = reference_ccc_member(ccc)
    for c in gone:
        ccc[c] = 0
    log("%d flag overrides, %d ccc overrides, %d decompositions dropped"
        % (len(overrides), len(gone), len(undecomposed)))

    # What tokenizer.c relies on.
    for c, v in ccc.items():
        if v and flags[c] & (SPACE | PUNCT):
            sys.exit("U+%04X has ccc %d and splits words" % (c, v))
        if v and not flags[c] & MN and c in lower:
            sys.exit("U+%04X: a surviving combining mark that lowercases" % c)
    for c, low in lower.items():
        if len(low) > 1 and c not in decomp:
            sys.exit("U+%04X lowercases to several and does not decompose" % c)
    # Output: DROP chars keep only DROP (clean_text removes them first).
    tab = {c: (DROP if f & DROP else f) for c, f in flags.items()}
    bad = check(Model(tab, ccc, decomp, lower))
    if bad:
        sys.exit("%d mismatches against the reference" % bad)
    log("replay: every code point agrees with the reference")

    fr = ranges({c: f for c, f in tab.items() if c >= 0x80})
    cr = ranges(ccc)
    single = {c: v[0] for c, v in lower.items() if len(v) == 1 and c >= 0x80}
    multi = sorted((c, v) for c, v in lower.items() if len(v) > 1)
    lr = lower_ranges(single)
    pool, dec = [], []
    for c in sorted(decomp):
        dec.append((c, len(pool), len(decomp[c])))
        pool += decomp[c]
    max_decomp = max(len(v) for v in decomp.values())
    max_lower = max(len(v) for v in lower.values())

    def ov_summary():
        rows = ranges(overrides)
        names = {DROP: "DROP", SPACE: "SPACE", PUNCT: "PUNCT", MN: "MN"}

        def fl(f):
            return "|".join(n for b, n in names.items() if f & b) or "-"
        out = []
        for lo, hi, _ in rows:
            a, b = overrides[lo]
            span = "U+%04X" % lo if lo == hi else "U+%04X..U+%04X" % (lo, hi)
            out.append(" *   %-22s %s -> %s" % (span, fl(a), fl(b)))
        return "\n".join(out)

    w = sys.stdout.write
    w("/* core/text/unicode_tables.c — GENERATED by scripts/gen_unicode_tables.py; do\n"
      " * not edit. Regenerate with\n"
      " *   .venv-ref/bin/python scripts/gen_unicode_tables.py > core/text/unicode_tables.c\n"
      " *\n"
      " * Unicode data of BERT's tokenizer (core/text/unicode.h says what each table\n"
      " * holds and how it is searched), from Python %s's unicodedata, Unicode %s,\n"
      " * corrected to the behaviour of the reference (`tokenizers`, whose Rust crates\n"
      " * carry older category data) on %d code points (unicodedata -> reference):\n"
      "%s\n"
      " * and %d combining marks the reference treats as ccc 0 (new since its data):\n"
      " *   %s\n"
      " * and %d characters whose decomposition the reference does not know:\n"
      " *   %s\n"
      " * The generator replayed the tokenizer on these tables against the reference\n"
      " * for every code point. */\n"
      % (sys.version.split()[0], ud.unidata_version, len(overrides), ov_summary(), len(gone),
         wrap(spans(gone)), len(undecomposed),
         wrap(["U+%04X" % c for c in sorted(undecomposed)])))
    w("#include \"core/text/unicode.h\"\n\n")
    w("const char *const ltdi__uni_version = \"%s\";\n\n" % ud.unidata_version)
    w("const uint8_t ltdi__uni_ascii_flags[128] = {\n%s\n};\n\n"
      % hexlist(["%d," % tab[c] for c in range(128)], 16))
    w("const ltdi__uni_range ltdi__uni_flag_ranges[] = {\n%s\n};\n"
      % hexlist(["{0x%05X, 0x%05X, %d}," % tuple(r) for r in fr], 4))
    w("const size_t ltdi__uni_n_flag_ranges = %d;\n\n" % len(fr))
    w("const ltdi__uni_range ltdi__uni_ccc_ranges[] = {\n%s\n};\n"
      % hexlist(["{0x%05X, 0x%05X, %d}," % tuple(r) for r in cr], 4))
    w("const size_t ltdi__uni_n_ccc_ranges = %d;\n\n" % len(cr))
    w("const ltdi__uni_lower_range ltdi__uni_lower_ranges[] = {\n%s\n};\n"
      % hexlist(["{0x%05X, 0x%05X, %d, %d}," % r for r in lr], 3))
    w("const size_t ltdi__uni_n_lower_ranges = %d;\n\n" % len(lr))
    w("const ltdi__uni_lower_multi ltdi__uni_lower_multis[] = {\n%s\n};\n"
      % "\n".join("  {0x%05X, %d, {%s}}," % (c, len(v), ", ".join("0x%05X" % x for x in v))
                  for c, v in multi))
    w("const size_t ltdi__uni_n_lower_multis = %d;\n\n" % len(multi))
    w("const ltdi__uni_decomp ltdi__uni_decomps[] = {\n%s\n};\n"
      % hexlist(["{0x%05X, %d, %d}," % d for d in dec], 4))
    w("const size_t ltdi__uni_n_decomps = %d;\n\n" % len(dec))
    w("const uint32_t ltdi__uni_decomp_pool[] = {\n%s\n};\n"
      % hexlist(["0x%05X," % x for x in pool], 8))
    log("flags %d ranges, ccc %d, lower %d + %d, decomp %d (pool %d); max decomp %d, lower %d"
        % (len(fr), len(cr), len(lr), len(multi), len(dec), len(pool), max_decomp, max_lower))
    if max_decomp > 4 or max_lower > 3:
        sys.exit("LTDI__UNI_MAX_DECOMP / LTDI__UNI_MAX_LOWER in unicode.h are too small")


if __name__ == "__main__":
    main()
