#!/usr/bin/env python3
"""tests/python/make_tokenizer_fixture.py — writes tests/fixtures/tokenizer_minilm.tsv,
the ids the reference tokenizer gives for a few thousand texts, which
tests/unit/test_tokenizer.c compares core/text/tokenizer.c against.

    .venv-ref/bin/python tests/python/make_tokenizer_fixture.py \\
        .venv-ref/encoder /usr/share/wordnet > tests/fixtures/tokenizer_minilm.tsv

The reference is transformers' AutoTokenizer on the all-MiniLM-L6-v2 folder
(BertTokenizerFast, the Rust `tokenizers` library), called as
tok(text, truncation=True, max_length=N)["input_ids"]; the cased lines use
the same folder with do_lower_case=False.

Texts: every k-th WordNet gloss (the text after "| " in data.noun, data.verb,
data.adj, data.adv) and hand-made hard cases (accents, ligatures, CJK,
Greek/Cyrillic, emoji, punctuation, controls and format characters, long
words, numbers, URLs, "##", special tokens written in the text, combining
marks out of canonical order, truncation at small max_length) and their
upper-case forms, every format/space/punctuation/mark character between
letters, and pseudo-random strings over all of Unicode from a fixed seed.

Format, one text per line, four tab-separated fields:
    lowercase  max_length  text  ids
lowercase is 1 (the model's do_lower_case) or 0; text is escaped: "\\\\",
"\\t", "\\n", "\\r", and "\\u{HEX}" for every other character that
str.isprintable() calls unprintable; ids are decimal, space-separated.
Lines starting with "#" are comments. A NUL is never in a text (ltdi
rejects it; the reference drops it).
"""
import os
import random
import sys

from transformers import AutoTokenizer

GLOSSES = 2500


def escape(s):
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable():
            out.append("\\u{%X}" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def glosses(wordnet):
    """Every k-th gloss of the four data files, GLOSSES in all, in file order."""
    all_ = []
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(wordnet, "data." + pos), encoding="utf-8") as f:
            for line in f:
                if line.startswith("  ") or "| " not in line:
                    continue  # the licence header
                all_.append(line.split("| ", 1)[1].strip())
    step = len(all_) / GLOSSES
    return [all_[int(i * step)] for i in range(GLOSSES)]


def hard_cases():
    long_sentence = ("The quick brown fox jumps over the lazy dog while antidisestablishmentarianism "
                     "and pneumonoultramicroscopicsilicovolcanoconiosis confuse tokenizers; ") * 6
    cases = [
        # accents, ligatures, compatibility forms
        "café", "naïve", "Ångström", "Å Å Å", "ﬁnancial ﬂower ﬀ ﬃ", "cœur Œuvre æsir",
        "résumé RÉSUMÉ Résumé", "façade Façade", "jalapeño piñata", "Zürich Ölfeld straße STRASSE ẞ",
        "e\u0301 vs é", "a\u0308\u0304", "Crème brûlée", "Dvořák Škoda Łódź Ćevapi", "Ærøskøbing",
        "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３", "x² H₂O ½ ⅓ №", "\u212a\u2126\u212b (Kelvin Ohm Angstrom signs)",
        "ǅemal ǈ ǋ", "İstanbul ISPARTA ılık İi Iı", "Ω ω µ μ", "ﬅ ﬆ", "㎏ ㍱ ㈱",
        # CJK and other scripts
        "中文分词测试", "我爱北京天安门。", "日本語のテキストとカタカナ", "ひらがな カタカナ 漢字",
        "한국어 문장입니다", "ᄀᄁ ㄱㄲ", "豈 更 車 (compatibility ideographs)", "\U00020000\U0002A700\U0002B820\U0002B920",
        "Ἀθῆναι ἡ πόλις", "ΟΔΟΣ Σίσυφος ΣΊΣΥΦΟΣ", "Москва — столица России", "ЁЖИК ёжик Йод",
        "Україна їжак ґанок", "עִבְרִית שָׁלוֹם", "العربية مَرْحَبًا", "हिन्दी भाषा", "ภาษาไทย",
        "ქართული", "Հայերեն", "አማርኛ", "தமிழ்", "ꦗꦮ", "𐌰𐌱𐌲 gothic", "ᚠᚢᚦ runes",
        # emoji and symbols
        "I love it 😀😀", "👍🏽 thumbs", "👨\u200d👩\u200d👧 family", "🇫🇷 flag", "❤️ heart", "🥰🫠 new emoji",
        "☃ ★ ♥ ♪ → ⇒ ∀ ∑ ∞ ≠ ≤", "© ® ™ § ¶ † ‡", "€100 £5 ¥300 ₹20 ¢", "½ + ¼ = ¾",
        # punctuation
        "Hello, world!", "!!!???...", "—–-‐‑‒", "«guillemets» ‹single›", "“curly” ‘quotes’ „low“",
        "¿Qué? ¡Sí!", "wait...what?!", "(nested [brackets {here}])", "a/b\\c|d", "~`^_",
        "semi;colon:colon", "O'Reilly's", "don't can't won't", "e.g. i.e. etc.", "...", "…",
        "⁂ ※ ‽ ⸘", "\u2e43\u2e52\u2e5d newer punctuation", "\u166d\u061d\u0a76", "#hashtag @mention",
        # mixed case
        "McDonald's iPhone eBay YouTube", "HELLO World hElLo", "CamelCaseWordsHere", "ALLCAPS",
        # white space, controls, format characters
        "a\tb\nc\r\nd", "tab\there", "line1\nline2\n\nline4", "\u00a0non\u00a0breaking\u00a0",
        "ideographic\u3000space", "line\u2028para\u2029sep", "em\u2003space thin\u2009space",
        "ctrl\x01\x02\x1f\x7fchars", "next\x85line", "bell\x07 back\x08space", "vt\x0bff\x0c",
        "file\x1cgroup\x1drecord\x1eunit\x1f", "zero\u200bwidth", "zw\u200cnj\u200dj", "\ufeffbom",
        "soft\u00adhyphen", "repl\ufffdacement", "private\ue000\uf8ffuse", "tag\U000E0001\U000E0041s",
        "arabic\u0890\u08e2new", "egyptian\U00013430", "lrm\u200erlm\u200f", "\u2060joiner\u2061",
        "   ", "\t\n\r", "\x01\x02", "", " leading and trailing ", "\ufffd", "\u0085",
        # combining marks
        "\u0301", "\u0301\u0302abc", "a\U0001D16D\U0001D165", "x\U0001D16D\u0301\U0001D165",
        "x\U0001D16D\u034f\U0001D165", "y\u302e\U0001D165", "\u1734\u11938", "z\u0316\u0301",
        "Z̤̖̼͎a̧͖̺̟͓l̛̘͚g͇̱o͏͇̣ text", "q\u20dd\u20e3", "ñ n\u0303 N\u0303",
        # long words
        "a" * 99, "a" * 100, "a" * 101, "b" * 100 + " ok", "é" * 100, "é" * 101, "İ" * 100, "İ" * 101,
        "\u0301" * 150 + "x", "x" + "\u0301" * 150, "ab" * 60, "pneumonoultramicroscopicsilicovolcanoconiosis",
        "supercalifragilisticexpialidocious", "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
        # numbers, URLs, code
        "3.14159", "1,000,000", "2024-01-01T12:30:00Z", "12:30pm", "1e-10", "0x1F", "-42", "+7 (555) 123-4567",
        "https://example.com/path?q=1&x=2#frag", "user.name+tag@example.co.uk", "www.ltdi.org/v1/generate",
        "C:\\Program Files\\x", "int main(void) { return 0; }", "<html><body>hi</body></html>",
        "{\"json\": [1, 2, 3]}", "$HOME/.bashrc", "snake_case_name", "kebab-case-name",
        # "##" and special tokens in the text
        "##ing", "a##b", "## heading", "###", "play##ing",
        "[SEP]", "[CLS] hello [SEP]", "[MASK] is here", "x[MASK]y", "[sep] [mask] [Cls]", "[UNK]", "[PAD]",
        "[[SEP]]", "[SEP[SEP]", "[CLS][SEP][PAD][UNK][MASK]", "[ SEP ]", "[SEP]word[SEP]",
        # words not in the vocabulary
        "xǂy ǃkung", "qwxzvbnm", "ꙮ", "\u0378 unassigned \U000E0080", "\U0010FFFD\U000F0000",
        "\U0001F9FF\U0001FAE0", "Ꭰ Cherokee ꭰ", "ⓐⓑⓒ Ⓐ", "𝐀𝐁𝐂 𝕒𝕓𝕔",
        long_sentence,
    ]
    return cases


def category_probes():
    """Every format, space, punctuation and mark character (and a sample of
    private-use and unassigned ones) between letters, 12 to a line: the
    classes where the reference's older Unicode data differ from Python's."""
    import unicodedata as ud
    chars = []
    for c in range(0x80, 0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        cat = ud.category(chr(c))
        if cat in ("Cf", "Zs", "Zl", "Zp", "Mc", "Me") or cat.startswith("P") \
                or (cat == "Mn" and c % 3 == 0) or (cat in ("Co", "Cn") and c % 4099 == 0):
            chars.append(chr(c))
    return [" ".join("x" + ch + "y" for ch in chars[i:i + 12]) for i in range(0, len(chars), 12)]


def random_strings(n, seed=20240611):
    """Strings mixing ASCII words with code points drawn from all of Unicode."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.35:
                parts.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDE") for _ in range(rng.randint(1, 8))))
            elif r < 0.5:
                parts.append(rng.choice([" ", "  ", "\t", "\n", ".", ",", "-", "'"]))
            else:
                lo, hi = rng.choice([(0x80, 0x2FF), (0x300, 0x36F), (0x370, 0x52F), (0x530, 0x1FFF),
                                     (0x2000, 0x2BFF), (0x2C00, 0xD7FF), (0xE000, 0xFFFF),
                                     (0x10000, 0x10FFFF), (0x1D100, 0x1D1FF), (0x1F000, 0x1FAFF)])
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 4))))
        s = "".join(parts)
        s = "".join(c for c in s if not 0xD800 <= ord(c) <= 0xDFFF)
        out.append(s)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_tokenizer_fixture.py ENCODER_DIR WORDNET_DIR > tokenizer_minilm.tsv")
    enc, wordnet = sys.argv[1], sys.argv[2]
    uncased = AutoTokenizer.from_pretrained(enc)
    cased = AutoTokenizer.from_pretrained(enc, do_lower_case=False)
    assert type(uncased).__name__ == "BertTokenizerFast"
    assert not cased.backend_tokenizer.normalizer.lowercase

    rows = []  # (lowercase, max_length, text)
    for i, g in enumerate(glosses(wordnet)):
        rows.append((1, (8, 16)[i // 10 % 2] if i % 10 == 0 else 128, g))
    hard = hard_cases()
    hard += [t.upper() for t in hard if t.upper() != t and len(t) < 200][:120]
    probes = category_probes()
    rand = random_strings(200)
    for i, t in enumerate(hard):
        rows.append((1, 128, t))
        rows.append((0, 128, t))
        if i % 7 == 0:
            rows.append((1, (2, 3, 8, 16)[i // 7 % 4], t))
    for i, t in enumerate(rand):
        rows.append((1, 128, t))
        if i % 4 == 0:
            rows.append((0, 64, t))
    for t in glosses(wordnet)[:200:5]:
        rows.append((0, 128, t))
    for t in probes:
        rows.append((1, 128, t))

    w = sys.stdout.write
    w("# tests/fixtures/tokenizer_minilm.tsv — written by tests/python/make_tokenizer_fixture.py\n")
    w("# (see there): lowercase, max_length, escaped text, reference ids; %d lines.\n" % len(rows))
    for lower, n, text in rows:
        assert "\0" not in text
        tok = uncased if lower else cased
        ids = tok(text, truncation=True, max_length=n)["input_ids"]
        w("%d\t%d\t%s\t%s\n" % (lower, n, escape(text), " ".join(map(str, ids))))
    print("%d lines: %d glosses, %d hard cases, %d random strings, %d category probes"
          % (len(rows), GLOSSES, len(hard), len(rand), len(probes)), file=sys.stderr)


if __name__ == "__main__":
    main()
