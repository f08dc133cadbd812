#!/usr/bin/env python3
"""Build a real-text corpus and record datatrove 0.10.1's filter verdicts for it.

kiln re-implements datatrove's Gopher quality, Gopher repetition, C4 quality and FineWeb
quality filters (and the spaCy English word tokenizer they use). This script writes a test
fixture that lets the Rust tests compare kiln against datatrove without Python.

Usage:

    python3 scripts/make_filter_fixtures.py [--out tests/fixtures/filters/corpus.jsonl.gz]

Requirements: Python 3.11 with datatrove==0.10.1 and spacy (3.8; spaCy's blank English
pipeline, no model download) installed. The corpus is built only from text files already on
the machine:

  * Python site-packages (site.getsitepackages()): every ``*.dist-info/METADATA`` (whole
    file), ``LICENSE*``/``COPYING*``/``NOTICE*`` files, and README/CHANGELOG/HISTORY/
    ``*.rst``/``*.md``/``*.txt`` files inside packages (a sample of awscli's many
    example ``.rst`` files);
  * Debian docs: ``/usr/share/doc/*/copyright``, the first 200 lines of
    ``/usr/share/doc/*/changelog*.gz``, ``/usr/share/doc/*/README*`` (gunzipped when
    ``.gz``), and ``/usr/share/common-licenses/*``.

Each whole file is one ``"technical"`` document. ``"prose"`` documents are runs of
consecutive prose-like paragraphs (sentences, many stop words, no code/bullets) extracted
from the same files, each of at least 60 words; their id is ``<path>#<n>``.

Determinism: sorted file lists, ``random.Random(0)`` for all sampling, identical texts
deduplicated (first kept), non-UTF-8 files skipped, documents capped at 12,000 characters
(cut at a line boundary) and dropped under 20 characters; nothing else is normalised
(whitespace, tabs, ``\\r`` and unicode are kept as found). Output rows are sorted by id and the
gzip header has mtime 0, so a rerun on the same machine is byte-identical. (On another
machine the installed files differ, so the corpus does too.)

Each output line is a JSON object::

    {"id": ..., "kind": "technical"|"prose", "text": ...,
     "verdicts": {"gopher_quality": [kept, reason], "gopher_repetition": [...],
                  "c4": [...], "fineweb": [...]},
     "words": [...]}

Verdicts come from calling ``filter(doc)`` of each filter, constructed with default
arguments, on a fresh ``Document`` per filter (C4QualityFilter edits ``doc.text``; only its
verdict is recorded). ``filter`` returns True, False or (False, reason); this is recorded
as ``[true, null]``, ``[false, null]`` or ``[false, reason]``. ``words`` is
``load_word_tokenizer("en").word_tokenize(text)``: spaCy's blank English tokenizer with
whitespace-only tokens dropped and tokens stripped.

The script prints counts (documents per kind, kept/removed per filter and per reason) and
the time it took.
"""

import argparse
import collections
import gzip
import hashlib
import io
import json
import os
import random
import re
import site
import sys
import time

MAX_CHARS = 12_000
MIN_CHARS = 20
CHANGELOG_LINES = 200
PROSE_MIN_WORDS = 60
PROSE_MAX_CHARS = 4_000
# Budget for the raw text of the technical documents (characters), to keep the fixture small;
# a random subset of the documents over 6,000 characters is dropped to meet it.
TECHNICAL_BUDGET = 3_900_000

# Per-source sample sizes for technical documents (None: all of them).
QUOTAS = {
    "metadata": None,
    "sp_license": None,
    "sp_doc": None,
    "awscli_doc": 950,
    "deb_copyright": 300,
    "deb_changelog": 300,
    "deb_readme": None,
    "common_license": None,
}
PROSE_TARGET = {"license": 120, "other": 260}
LICENSE_SOURCES = {"common_license", "deb_copyright", "sp_license"}
PROSE_PER_FILE = 2

FILTER_NAMES = ["gopher_quality", "gopher_repetition", "c4", "fineweb"]


# ---------------------------------------------------------------------------------------------
# file discovery


def site_packages_dir():
    dirs = [d for d in site.getsitepackages() if os.path.isdir(d)]
    return sorted(dirs)[0]


def walk_files(root, skip_dirs=()):
    """All regular files under root (no symlinks followed), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and d != "__pycache__")
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return sorted(out)


LICENSE_RE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE)", re.I)
DOC_RE = re.compile(r"^(README|CHANGELOG|CHANGES|HISTORY)|\.(rst|md|txt)$", re.I)


def discover():
    """Return {source: [(id, path, how)]} with sorted lists."""
    sp = site_packages_dir()
    sources = collections.defaultdict(list)
    for p in walk_files(sp):
        rel = os.path.relpath(p, sp)
        doc_id = "site-packages/" + rel
        parts = rel.split(os.sep)
        name = parts[-1]
        in_dist_info = parts[0].endswith(".dist-info") or parts[0].endswith(".egg-info")
        if in_dist_info and len(parts) == 2 and name == "METADATA":
            sources["metadata"].append((doc_id, p, "whole"))
        elif LICENSE_RE.match(name):
            sources["sp_license"].append((doc_id, p, "whole"))
        elif in_dist_info:
            continue
        elif DOC_RE.search(name):
            if parts[0] == "awscli":
                sources["awscli_doc"].append((doc_id, p, "whole"))
            else:
                sources["sp_doc"].append((doc_id, p, "whole"))
    doc_root = "/usr/share/doc"
    if os.path.isdir(doc_root):
        for pkg in sorted(os.listdir(doc_root)):
            d = os.path.join(doc_root, pkg)
            if not os.path.isdir(d) or os.path.islink(d):
                continue
            for f in sorted(os.listdir(d)):
                p = os.path.join(d, f)
                if not os.path.isfile(p) or os.path.islink(p):
                    continue
                if f == "copyright":
                    sources["deb_copyright"].append((p, p, "whole"))
                elif f.startswith("changelog") and f.endswith(".gz"):
                    sources["deb_changelog"].append((p, p, "head"))
                elif f.startswith("README"):
                    sources["deb_readme"].append((p, p, "whole"))
    lic_root = "/usr/share/common-licenses"
    if os.path.isdir(lic_root):
        for f in sorted(os.listdir(lic_root)):
            p = os.path.join(lic_root, f)
            if os.path.isfile(p):
                sources["common_license"].append((p, p, "whole"))
    return {k: sorted(v) for k, v in sorted(sources.items())}


# ---------------------------------------------------------------------------------------------
# reading


def read_text(path, how):
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None
    if "\x00" in text:
        return None
    if how == "head":
        lines = text.split("\n")
        if len(lines) > CHANGELOG_LINES:
            text = "\n".join(lines[:CHANGELOG_LINES]) + "\n"
    return text


def cap(text):
    """Cap at MAX_CHARS characters, cutting after the last newline within the cap."""
    if len(text) <= MAX_CHARS:
        return text
    head = text[:MAX_CHARS]
    nl = head.rfind("\n")
    return head[: nl + 1] if nl > 0 else head


# ---------------------------------------------------------------------------------------------
# prose extraction

PARA_SPLIT = re.compile(r"\n[ \t\r]*\n(?:[ \t\r]*\n)*")  # blank lines, LF or CRLF
ALPHA_TOKEN = re.compile(r"^[(\"'`“‘]*[A-Za-z][A-Za-z'’-]*[)\"'`”’,;:.!?]*$")
CODE_LINE_START = ("-", "*", "•", "+", ">", "$", "#", "|", "..", "=", "::", "`", "[", "%", "@")
SENT_END = re.compile(r"[.!?][\"')\]”’]*(\s|$)")


def load_stop_words():
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


def is_prose_paragraph(para, stop_words):
    words = para.split()
    if len(words) < 8:
        return False
    if "{" in para or "}" in para or "\t" in para:
        return False
    for line in para.split("\n"):
        s = line.lstrip(" ")
        if len(line) - len(s) > 3:
            return False
        if s.startswith(CODE_LINE_START):
            return False
        if re.match(r"^(\d+[.)]|[a-z][.)])\s", s):  # numbered list items
            return False
    stripped = para.rstrip()
    if not re.search(r"[.!?][\"')\]”’]*$", stripped):
        return False
    alpha = sum(1 for w in words if ALPHA_TOKEN.match(w))
    if alpha / len(words) < 0.85:
        return False
    lower = [re.sub(r"[^a-z']", "", w.lower()) for w in words]
    stops = sum(1 for w in lower if w in stop_words)
    if stops / len(words) < 0.3:
        return False
    n_sent = len(SENT_END.findall(para))
    if n_sent < 1 or len(words) / n_sent > 60:
        return False
    return True


def prose_runs(text, stop_words):
    """Return substrings of text made of consecutive prose paragraphs (original whitespace)."""
    spans = []
    pos = 0
    for m in PARA_SPLIT.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    run = []

    def flush():
        # split a run into chunks of <= PROSE_MAX_CHARS, each of >= PROSE_MIN_WORDS words
        chunk = []
        for a, b in run:
            if chunk and b - chunk[0][0] > PROSE_MAX_CHARS:
                yield chunk
                chunk = []
            chunk.append((a, b))
        if chunk:
            yield chunk

    out = []
    for a, b in spans + [(None, None)]:
        if a is not None:
            para = text[a:b]
            if para.strip() and is_prose_paragraph(para, stop_words):
                run.append((a, b))
                continue
        for chunk in flush():
            start, end = chunk[0][0], chunk[-1][1]
            piece = text[start:end]
            if len(piece.split()) >= PROSE_MIN_WORDS and len(piece) <= MAX_CHARS:
                out.append(piece)
        run = []
    return out


# ---------------------------------------------------------------------------------------------
# verdicts


def make_judges():
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    filters = {
        "gopher_quality": GopherQualityFilter(),
        "gopher_repetition": GopherRepetitionFilter(),
        "c4": C4QualityFilter(),
        "fineweb": FineWebQualityFilter(),
    }
    tokenizer = load_word_tokenizer("en")

    def judge(doc_id, text):
        verdicts = {}
        for name in FILTER_NAMES:
            res = filters[name].filter(Document(text=text, id=doc_id))
            if isinstance(res, tuple):
                kept, reason = res
            else:
                kept, reason = res, None
            verdicts[name] = [bool(kept), reason]
        words = tokenizer.word_tokenize(text)
        return verdicts, words

    return judge


# ---------------------------------------------------------------------------------------------


def build_corpus(log):
    rng = random.Random(0)
    stop_words = load_stop_words()
    sources = discover()
    for k, v in sources.items():
        log(f"  source {k}: {len(v)} files")

    technical = []  # (id, text, source)
    prose_candidates = {}  # path id -> (source, [piece])
    seen = set()
    for src, files in sources.items():
        texts = []
        for doc_id, path, how in files:
            text = read_text(path, how)
            if text is None:
                continue
            texts.append((doc_id, text))
            pieces = prose_runs(text, stop_words)
            if pieces:
                prose_candidates[doc_id] = (src, pieces)
        # dedupe (across all sources so far), then sample this source's quota
        uniq = []
        for doc_id, text in texts:
            text = cap(text)
            if len(text.strip()) < MIN_CHARS or text in seen:
                continue
            seen.add(text)
            uniq.append((doc_id, text))
        quota = QUOTAS.get(src)
        if quota is not None and len(uniq) > quota:
            idx = sorted(rng.sample(range(len(uniq)), quota))
            uniq = [uniq[i] for i in idx]
        technical.extend((doc_id, text, src) for doc_id, text in uniq)

    # keep the raw size in budget: drop a random subset of the longest documents
    total = sum(len(t) for _, t, _ in technical)
    if total > TECHNICAL_BUDGET:
        long_idx = [i for i, (_, t, _) in enumerate(technical) if len(t) > 6_000]
        rng.shuffle(long_idx)
        drop = set()
        for i in long_idx:
            if total <= TECHNICAL_BUDGET:
                break
            drop.add(i)
            total -= len(technical[i][1])
        technical = [d for i, d in enumerate(technical) if i not in drop]

    # prose: at most PROSE_PER_FILE pieces per file; then a sample per group, so that license
    # boilerplate (very common) does not crowd out README / description / changelog prose
    pools = collections.defaultdict(list)
    for doc_id in sorted(prose_candidates):
        src, pieces = prose_candidates[doc_id]
        idx = list(range(len(pieces)))
        if len(idx) > PROSE_PER_FILE:
            idx = sorted(rng.sample(idx, PROSE_PER_FILE))
        group = "license" if src in LICENSE_SOURCES else "other"
        for i in idx:
            pools[group].append((f"{doc_id}#{i}", pieces[i]))
    prose = []
    for group in sorted(pools):
        pool = pools[group]
        rng.shuffle(pool)
        taken = 0
        for doc_id, text in pool:
            if taken >= PROSE_TARGET[group]:
                break
            if text in seen or len(text) < MIN_CHARS:
                continue
            seen.add(text)
            prose.append((doc_id, text))
            taken += 1

    docs = [(i, "technical", t) for i, t, _ in technical] + [(i, "prose", t) for i, t in prose]
    docs.sort(key=lambda d: d[0])
    ids = [d[0] for d in docs]
    assert len(ids) == len(set(ids)), "duplicate ids"
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures/filters/corpus.jsonl.gz")
    args = ap.parse_args()

    t0 = time.time()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    log("collecting corpus ...")
    docs = build_corpus(log)
    t1 = time.time()
    log(f"  {len(docs)} documents, {sum(len(t) for _, _, t in docs):,} chars ({t1 - t0:.1f}s)")

    judge = make_judges()
    rows = []
    for n, (doc_id, kind, text) in enumerate(docs):
        verdicts, words = judge(doc_id, text)
        rows.append({"id": doc_id, "kind": kind, "text": text, "verdicts": verdicts, "words": words})
        if (n + 1) % 500 == 0:
            log(f"  judged {n + 1}/{len(docs)} ({time.time() - t1:.1f}s)")
    t2 = time.time()

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))
    data = buf.getvalue()
    with open(args.out, "wb") as f:
        f.write(data)

    # ----- report
    from importlib.metadata import version

    kinds = collections.Counter(r["kind"] for r in rows)
    raw = sum(len(r["text"].encode("utf-8")) for r in rows)
    print(f"wrote {args.out}: {len(data):,} bytes gzip, sha256 {hashlib.sha256(data).hexdigest()}")
    print(
        f"versions: datatrove {version('datatrove')}, spacy {version('spacy')}, "
        f"python {sys.version.split()[0]}"
    )
    print(f"documents: {len(rows)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
          f"raw text {raw:,} bytes")
    lengths = sorted(len(r["words"]) for r in rows)
    print(f"word tokens per doc: min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {lengths[-1]}; "
          f"docs under 50 tokens: {sum(1 for x in lengths if x < 50)}")
    for name in FILTER_NAMES:
        for kind in ["all"] + sorted(kinds):
            sel = [r for r in rows if kind == "all" or r["kind"] == kind]
            kept = sum(1 for r in sel if r["verdicts"][name][0])
            reasons = collections.Counter(
                r["verdicts"][name][1] or "(no reason)" for r in sel if not r["verdicts"][name][0]
            )
            rs = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
            print(f"{name:18s} {kind:9s} kept {kept:5d} removed {len(sel) - kept:5d}  [{rs}]")
    print(f"time: collect {t1 - t0:.1f}s, judge {t2 - t1:.1f}s, total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
