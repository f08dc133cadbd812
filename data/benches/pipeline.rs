//! Throughput of data preparation (filters + dedup + tokenization) on a generated web corpus.
//!
//! ```text
//! cargo bench -p kiln-data --bench pipeline -- [--mb 256] [--files 16] [--threads N] [--keep DIR]
//! cargo bench -p kiln-data --bench pipeline -- --input 'DIR/part-000[01].parquet' --tokenizer T.json
//! ```
//!
//! With `--input`, existing parquet files (a glob) are prepared instead of a generated corpus
//! (e.g. the same files `scripts/bench_datatrove.py` reads), with `--tokenizer` if given.
//!
//! Writes `--mb` MB of generated pages ([`kiln_testkit::webgen::WebCorpus`]: articles plus
//! boilerplate, non-English, short, repetitive and duplicated pages) as parquet files, trains a
//! tokenizer on a sample (timed apart), then times [`kiln_data::prepare`] with every filter,
//! exact and MinHash dedup on. Prints MB/s and tokens/s, in total and per core, peak memory
//! during preparation, and one JSON line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_data::dedup::{DedupConfig, MinHashConfig};
use kiln_data::{
    prepare, DataConfig, Document, SourceConfig, SourceKind, TextTokenizer, TokenizerSpec, EOT,
};
use kiln_testkit::webgen::{write_parquet, WebCorpus};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory (MiB) since the last [`reset_peak_rss`].
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// Resets the kernel's peak-RSS counter (Linux: writing 5 to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn generate(dir: &Path, mb: usize, files: usize) -> (u64, u64) {
    let mut corpus = WebCorpus::new(2024);
    let per_file = (mb << 20) / files;
    let (mut bytes, mut docs) = (0u64, 0u64);
    for f in 0..files {
        let mut batch: Vec<Document> = Vec::new();
        let mut file_bytes = 0;
        while file_bytes < per_file {
            let doc = corpus.next_doc().1;
            file_bytes += doc.text.len();
            batch.push(doc);
        }
        bytes += file_bytes as u64;
        docs += batch.len() as u64;
        write_parquet(&dir.join(format!("part-{f:04}.parquet")), &batch, 1000)
            .expect("write parquet");
    }
    (bytes, docs)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mb: usize = arg(&args, "--mb", 256);
    let files: usize = arg(&args, "--files", 16);
    let threads: usize = arg(
        &args,
        "--threads",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let keep: Option<PathBuf> = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("rayon pool");

    let tmp = tempfile::tempdir().expect("temp dir");
    let root = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let named = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let pattern = match named("--input") {
        Some(pattern) => pattern,
        None => {
            let input = root.join("input");
            std::fs::create_dir_all(&input).expect("input dir");
            let t = Instant::now();
            let (text_bytes, docs) = generate(&input, mb, files);
            eprintln!(
                "generated {docs} pages, {:.0} MB of text, in {files} parquet files in {:.1}s",
                text_bytes as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            input
                .join("*.parquet")
                .to_str()
                .expect("utf-8 path")
                .to_string()
        }
    };

    // Tokenizer on a sample, timed apart (it is trained once per corpus, not per byte).
    let tok_path = match named("--tokenizer") {
        Some(path) => PathBuf::from(path),
        None => {
            let t = Instant::now();
            let mut sample_corpus = WebCorpus::new(1);
            let sample: Vec<String> = (0..4000).map(|_| sample_corpus.next_doc().1.text).collect();
            let tok =
                TextTokenizer::train_bpe(sample.iter(), 8192, &[EOT.to_string()]).expect("bpe");
            let tok_path = root.join("tokenizer.json");
            tok.save(&tok_path).expect("save tokenizer");
            eprintln!(
                "tokenizer (vocab 8192) trained in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            tok_path
        }
    };

    let mut source = SourceConfig::files(SourceKind::Parquet, &[pattern.as_str()]);
    source.name = Some("web".into());
    source.filters = serde_yaml_ng::from_str(
        "{language: {}, min_length: {}, gopher_repetition: {}, gopher_quality: {}, c4: {}, fineweb: {}}",
    )
    .expect("filters");
    source.dedup = DedupConfig {
        exact: true,
        minhash: Some(MinHashConfig::default()),
    };
    let mut config = DataConfig::new(vec![source]);
    config.cache_dir = root.join("cache");
    let _ = std::fs::remove_dir_all(&config.cache_dir);

    reset_peak_rss();
    let t = Instant::now();
    let data = prepare(
        &config,
        &TokenizerSpec::File { path: tok_path },
        &mut |l: &str| eprintln!("{l}"),
    )
    .expect("prepare");
    let secs = t.elapsed().as_secs_f64();
    let peak = peak_rss_mb();
    let r = &data.reports[0];
    let mbps = r.bytes_read as f64 / 1e6 / secs;
    let tokps = r.tokens_out as f64 / secs;
    eprintln!("{}", r.to_text());
    eprintln!(
        "prepare: {:.0} MB in {secs:.1}s on {threads} threads: {mbps:.1} MB/s ({:.1} MB/s per core), \
         {:.2}M tokens/s written ({:.2}M per core), peak RSS {}",
        r.bytes_read as f64 / 1e6,
        mbps / threads as f64,
        tokps / 1e6,
        tokps / 1e6 / threads as f64,
        peak.map_or("-".into(), |p| format!("{p:.0} MiB"))
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "data_pipeline",
            "input_mb": r.bytes_read as f64 / 1e6,
            "docs_read": r.docs_read,
            "docs_kept": r.docs_out,
            "tokens_out": r.tokens_out,
            "seconds": secs,
            "threads": threads,
            "mb_per_s": mbps,
            "mb_per_s_per_core": mbps / threads as f64,
            "tokens_per_s": tokps,
            "tokens_per_s_per_core": tokps / threads as f64,
            "peak_rss_mb": peak,
        })
    );
}
