"""Compares kiln's word splitting and sentence counts with datatrove's (spaCy) on files of this machine.

    cargo build --release -p kiln-data --example words
    python3 scripts/compare_words.py [SEED] [N]     # N files drawn at random (default 3000)

Draws N UTF-8 text files (under 30,000 characters) from installed Python packages, the cargo registry,
Debian docs, Perl modules and C headers, runs them through `target/release/examples/words` and through
datatrove's `word_tokenize` / `split_into_sentences` for English, and prints the documents that differ.
Needs datatrove 0.10.1 and spaCy (pip install datatrove==0.10.1 spacy).
"""
import glob, json, os, random, subprocess, sys, gzip
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = __import__("sysconfig").get_paths()["purelib"]
from datatrove.utils.word_tokenizers import load_word_tokenizer
from datatrove.utils.text import split_into_sentences
tok = load_word_tokenizer("en")
fixture_ids = set()
for l in gzip.open(os.path.join(ROOT, 'tests/fixtures/filters/corpus.jsonl.gz'),'rt'):
    fixture_ids.add(json.loads(l)['id'].split('#')[0])
paths = []
for pat in [SITE + '/**/*.py', SITE + '/**/*.rst', SITE + '/**/*.txt', SITE + '/**/*.md', '/usr/share/doc/**/*', os.path.expanduser('~/.cargo/registry/src/**/*.md'), os.path.expanduser('~/.cargo/registry/src/**/*.rs'), '/usr/lib/python3*/**/*.py', '/usr/share/perl/**/*.pod', '/usr/share/perl5/**/*.pm', '/usr/include/**/*.h']:
    paths += glob.glob(pat, recursive=True)
paths = sorted(set(p for p in paths if os.path.isfile(p)))
random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 1).shuffle(paths)
docs = []
for p in paths:
    if len(docs) >= (int(sys.argv[2]) if len(sys.argv) > 2 else 3000): break
    # Only files the committed fixture corpus does not hold.
    if p in fixture_ids or "site-packages/" + p.split("site-packages/")[-1] in fixture_ids:
        continue
    try:
        t = open(p, encoding='utf-8').read()
    except Exception:
        continue
    if not t.strip() or len(t) > 30000: continue
    docs.append((p, t))
inp = "".join(json.dumps({"text": t}) + "\n" for _, t in docs)
res = subprocess.run([os.path.join(ROOT, "target/release/examples/words")], input=inp, capture_output=True, text=True, check=True)
outs = [json.loads(l) for l in res.stdout.splitlines()]
bad_w = bad_s = 0
for (p, t), o in zip(docs, outs):
    w = tok.word_tokenize(t)
    if w != o["words"]:
        bad_w += 1
        i = next((i for i,(a,b) in enumerate(zip(w,o["words"])) if a!=b), min(len(w),len(o["words"])))
        if bad_w <= 15: print("WORDS", p, i, "dt", w[max(0,i-2):i+3], "kiln", o["words"][max(0,i-2):i+3])
    # sentences per line, as C4 uses them
    n = len(split_into_sentences(t))
    if n != o["sentences"]:
        bad_s += 1
        if bad_s <= 5: print("SENT", p, n, o["sentences"])
print(f"{len(docs)} docs: words differ {bad_w}, sentences differ {bad_s}")
