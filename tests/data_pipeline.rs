//! The data pipeline end to end, on real-looking web pages the test writes as parquet and JSONL:
//! filters drop what their rules say, dedup keeps one of each duplicate, the report adds up,
//! restarts and `--shard i/n` workers give the same shards as one uninterrupted run.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use kiln_data::dedup::{DedupConfig, MinHashConfig};
use kiln_data::filters::{FilterChain, FilterConfig};
use kiln_data::{
    prepare, prepare_tokenizer, prepare_worker, read_doc_index, DataConfig, Document, PreparedData,
    Shard, SourceConfig, SourceKind, TextTokenizer, TokenFormat, TokenizerSpec, EOT,
};
use kiln_testkit::webgen::{write_jsonl, write_parquet, WebCorpus, WebDocKind};

/// `n_files` parquet files of `per_file` pages each, plus the kind of every page by its text and
/// the bytes of text written.
fn web_corpus(dir: &Path, n_files: usize, per_file: usize) -> (BTreeMap<String, WebDocKind>, u64) {
    let mut corpus = WebCorpus::new(7);
    let mut kinds = BTreeMap::new();
    let mut bytes = 0;
    for f in 0..n_files {
        let docs: Vec<Document> = (0..per_file)
            .map(|_| {
                let (kind, doc) = corpus.next_doc();
                bytes += doc.text.len() as u64;
                kinds.entry(doc.text.clone()).or_insert(kind);
                doc
            })
            .collect();
        write_parquet(&dir.join(format!("part-{f:03}.parquet")), &docs, 64).unwrap();
    }
    (kinds, bytes)
}

/// `kinds` re-keyed by the text the C4 rules leave of each page (pages C4 drops are left out).
fn as_c4_leaves_them(kinds: BTreeMap<String, WebDocKind>) -> BTreeMap<String, WebDocKind> {
    let c4_only: FilterConfig = serde_yaml_ng::from_str("{c4: {}}").unwrap();
    let c4 = FilterChain::new(&c4_only, "test").unwrap();
    let mut out = BTreeMap::new();
    for (text, kind) in kinds {
        let mut doc = Document::from_text(text);
        if c4.apply(&mut doc).is_ok() {
            out.entry(doc.text).or_insert(kind);
        }
    }
    out
}

fn all_filters() -> FilterConfig {
    serde_yaml_ng::from_str(
        "{language: {}, min_length: {}, gopher_repetition: {}, gopher_quality: {}, c4: {}, fineweb: {}}",
    )
    .unwrap()
}

fn web_source(paths: &str) -> SourceConfig {
    let mut s = SourceConfig::files(SourceKind::Parquet, &[paths]);
    s.name = Some("web".into());
    s.filters = all_filters();
    s.dedup = DedupConfig {
        exact: true,
        minhash: Some(MinHashConfig::default()),
    };
    s.keep_rejected = 3;
    s.val_fraction = Some(0.1);
    s
}

fn config(cache: &Path, sources: Vec<SourceConfig>) -> DataConfig {
    let mut c = DataConfig::new(sources);
    c.cache_dir = cache.to_path_buf();
    c.shard_tokens = 4096;
    c
}

fn bpe(vocab_size: usize) -> TokenizerSpec {
    TokenizerSpec::TrainBpe {
        vocab_size,
        sample_docs: 300,
        special_tokens: vec![EOT.to_string()],
    }
}

/// The documents of a list of shards, decoded (each without its `<|endoftext|>`). A document
/// may continue from one shard into the next.
fn documents(tok: &TextTokenizer, shards: &[PathBuf]) -> Vec<String> {
    let eot = tok.eot_id().unwrap();
    let (mut ids, mut starts) = (Vec::new(), Vec::new());
    for path in shards {
        let shard = Shard::open(path).unwrap().to_vec();
        let index = read_doc_index(&path.with_extension("idx")).unwrap();
        // Every indexed start is an EOT, and every EOT is indexed.
        let eots: Vec<u64> = (0..shard.len() as u64)
            .filter(|&i| shard[i as usize] == eot)
            .collect();
        assert_eq!(index, eots, "{}", path.display());
        starts.extend(index.iter().map(|&s| s as usize + ids.len()));
        ids.extend(shard);
    }
    assert_eq!(starts.first(), if ids.is_empty() { None } else { Some(&0) });
    (0..starts.len())
        .map(|k| {
            let end = starts.get(k + 1).copied().unwrap_or(ids.len());
            tok.decode(&ids[starts[k] + 1..end]).unwrap()
        })
        .collect()
}

fn token_stream(shards: &[PathBuf]) -> Vec<u32> {
    shards
        .iter()
        .flat_map(|p| Shard::open(p).unwrap().to_vec())
        .collect()
}

fn quiet() -> impl FnMut(&str) {
    |_: &str| {}
}

#[test]
fn filters_and_dedup_keep_the_articles_and_drop_the_rest_and_the_report_adds_up() {
    let input = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (kinds, input_bytes) = web_corpus(input.path(), 3, 200);
    let pattern = input.path().join("*.parquet");
    let cfg = config(cache.path(), vec![web_source(pattern.to_str().unwrap())]);
    let data = prepare(&cfg, &bpe(600), &mut quiet()).unwrap();
    let tok = TextTokenizer::from_file(&data.tokenizer_path).unwrap();
    let src = &data.sources[0];
    let kept: Vec<String> = documents(&tok, &src.train_shards)
        .into_iter()
        .chain(documents(&tok, &src.val_shards))
        .collect();
    let kept_set: HashSet<&str> = kept.iter().map(|s| s.as_str()).collect();
    assert_eq!(kept.len(), kept_set.len(), "a document was kept twice");
    // The C4 rules edit what they keep (titles and blank lines go), so compare against each
    // page as C4 alone would leave it.
    let kinds = as_c4_leaves_them(kinds);

    let mut by_kind: BTreeMap<WebDocKind, (usize, usize)> = BTreeMap::new();
    for (text, kind) in &kinds {
        let e = by_kind.entry(*kind).or_default();
        e.0 += 1;
        e.1 += usize::from(kept_set.contains(text.as_str()));
    }
    for (kind, (total, kept)) in &by_kind {
        match kind {
            WebDocKind::Article => assert!(
                *kept as f64 >= 0.95 * *total as f64,
                "articles: kept {kept} of {total}"
            ),
            // Exact duplicates share the original's text: it is kept once (checked above).
            WebDocKind::ExactDuplicate => {}
            _ => assert_eq!(*kept, 0, "{kind:?}: kept {kept} of {total}"),
        }
    }
    // Everything kept is an article from the input (no edited or invented text).
    for text in &kept {
        assert_eq!(kinds.get(text), Some(&WebDocKind::Article), "{text:.80}");
    }

    // The report adds up, stage by stage.
    let r = &data.reports[0];
    assert_eq!(r.files, 3);
    assert_eq!(r.docs_read, 600);
    assert_eq!(r.bytes_read, input_bytes);
    let kept_bytes: usize = kept.iter().map(|t| t.len()).sum();
    assert_eq!(r.bytes_out, kept_bytes as u64);
    // The C4 rules edit pages (titles and blank lines go): the report says how much.
    let bytes_removed: u64 = r.stages.iter().map(|s| s.bytes_removed).sum();
    assert!(r.bytes_read > bytes_removed + r.bytes_out);
    assert!(r.to_text().contains("lines edited out of documents"));
    let removed: u64 = r.stages.iter().map(|s| s.docs_removed).sum();
    assert_eq!(r.docs_read, removed + r.docs_out);
    let mut reaching = r.docs_read;
    for s in &r.stages {
        assert_eq!(s.docs_in, reaching, "stage {}", s.name);
        reaching -= s.docs_removed;
    }
    assert_eq!(r.docs_out, kept.len() as u64);
    assert_eq!(r.train_docs + r.val_docs, r.docs_out);
    assert_eq!(r.train_tokens, token_stream(&src.train_shards).len() as u64);
    assert_eq!(r.val_tokens, token_stream(&src.val_shards).len() as u64);
    assert!(r.val_docs > 0 && r.val_docs < r.docs_out / 4, "{r:?}");
    let stage = |name: &str| r.stages.iter().find(|s| s.name == name).unwrap();
    assert!(stage("language").docs_removed > 0);
    assert!(stage("dedup_exact").docs_removed > 0);
    assert!(stage("dedup_near").docs_removed > 0);
    assert!(!stage("dedup_near").tokens_estimated);
    assert!(stage("language").tokens_estimated);

    // Reports on disk, and rejected samples (at most 3 per filter).
    let report_txt = fs::read_to_string(src.dir.join("report.txt")).unwrap();
    assert!(report_txt.contains("dedup_near"), "{report_txt}");
    assert!(data.dir.join("report.json").is_file());
    let lang = fs::read_to_string(src.dir.join("rejected/language.jsonl")).unwrap();
    assert!((1..=3).contains(&lang.lines().count()));
    let first: serde_json::Value = serde_json::from_str(lang.lines().next().unwrap()).unwrap();
    assert_eq!(first["filter"], "language");
    assert!(first["text"].as_str().unwrap().len() > 20);
}

#[test]
fn an_interrupted_preparation_resumes_to_the_same_shards() {
    let input = tempfile::tempdir().unwrap();
    web_corpus(input.path(), 4, 60);
    let pattern = input.path().join("*.parquet");
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(cache.path(), vec![web_source(pattern.to_str().unwrap())]);
    let first = prepare(&cfg, &bpe(500), &mut quiet()).unwrap();
    let streams = |d: &PreparedData| {
        (
            token_stream(&d.sources[0].train_shards),
            token_stream(&d.sources[0].val_shards),
        )
    };
    let expected = streams(&first);

    // Simulate a run killed while unit 2 was being written: its record is gone, a shard is
    // half-written, and the source was never completed.
    let dir = &first.sources[0].dir;
    fs::remove_file(dir.join("source.json")).unwrap();
    fs::remove_file(dir.join("u000002.json")).unwrap();
    fs::write(dir.join("u000002.train.000.bin"), b"partial").unwrap();
    fs::remove_file(dir.join("u000003.json")).unwrap();
    let mut log = Vec::new();
    let again = prepare(&cfg, &bpe(500), &mut |l: &str| log.push(l.to_string())).unwrap();
    assert_eq!(streams(&again), expected);
    let redone: Vec<&String> = log.iter().filter(|l| l.contains("unit ")).collect();
    assert_eq!(redone.len(), 2, "only units 2 and 3 are redone: {log:?}");

    // A complete source is reused without touching its units.
    let mut log = Vec::new();
    prepare(&cfg, &bpe(500), &mut |l: &str| log.push(l.to_string())).unwrap();
    assert!(log.iter().any(|l| l.contains("reusing")), "{log:?}");

    // A changed input file makes the source stale: a new directory.
    let extra = WebCorpus::new(99).next_doc().1;
    write_parquet(&input.path().join("part-999.parquet"), &[extra], 8).unwrap();
    let changed = prepare(&cfg, &bpe(500), &mut quiet()).unwrap();
    assert_ne!(changed.sources[0].dir, first.sources[0].dir);
}

#[test]
fn workers_share_the_units_and_the_merge_equals_one_process() {
    let input = tempfile::tempdir().unwrap();
    // Duplicates across files: every file repeats pages of the others.
    let mut corpus = WebCorpus::with_mix(
        3,
        &[
            (WebDocKind::Article, 0.8),
            (WebDocKind::NearDuplicate, 0.1),
            (WebDocKind::ExactDuplicate, 0.1),
        ],
    );
    for f in 0..4 {
        let docs: Vec<Document> = (0..50).map(|_| corpus.next_doc().1).collect();
        write_parquet(&input.path().join(format!("p{f}.parquet")), &docs, 16).unwrap();
    }
    let pattern = input.path().join("*.parquet");
    let tok_dir = tempfile::tempdir().unwrap();
    let tok_cfg = config(tok_dir.path(), vec![web_source(pattern.to_str().unwrap())]);
    let tokenizer = TokenizerSpec::File {
        path: prepare_tokenizer(&tok_cfg, &bpe(500), &mut quiet()).unwrap(),
    };

    let single = tempfile::tempdir().unwrap();
    let one = prepare(
        &config(single.path(), vec![web_source(pattern.to_str().unwrap())]),
        &tokenizer,
        &mut quiet(),
    )
    .unwrap();

    let shared = tempfile::tempdir().unwrap();
    let cfg = config(shared.path(), vec![web_source(pattern.to_str().unwrap())]);
    let a = prepare_worker(&cfg, &tokenizer, 0, 2, &mut quiet()).unwrap();
    let b = prepare_worker(&cfg, &tokenizer, 1, 2, &mut quiet()).unwrap();
    assert_eq!((a.units_done, b.units_done), (2, 2));
    let mut log = Vec::new();
    let merged = prepare(&cfg, &tokenizer, &mut |l: &str| log.push(l.to_string())).unwrap();
    assert!(
        log.iter().any(|l| l.contains("across workers")),
        "the workers could not see each other's duplicates: {log:?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("unit ")),
        "no unit redone: {log:?}"
    );
    let s1 = &one.sources[0];
    let s2 = &merged.sources[0];
    assert_eq!(
        token_stream(&s1.train_shards),
        token_stream(&s2.train_shards)
    );
    assert_eq!(token_stream(&s1.val_shards), token_stream(&s2.val_shards));
    let (r1, r2) = (&one.reports[0], &merged.reports[0]);
    assert_eq!(
        (r1.docs_out, r1.train_tokens, r1.val_tokens),
        (r2.docs_out, r2.train_tokens, r2.val_tokens)
    );
    // The report is the one a single process writes, filter by filter; dedup removes the same
    // documents in total. (A page that is both an exact and a near duplicate may be counted
    // under the other dedup stage: a worker that saw only its near-duplicate counted it there.)
    assert_eq!(
        (r1.docs_read, r1.bytes_read, r1.bytes_out, r1.tokens_out),
        (r2.docs_read, r2.bytes_read, r2.bytes_out, r2.tokens_out)
    );
    let (dedup1, dedup2) = (
        &r1.stages[r1.stages.len() - 2..],
        &r2.stages[r2.stages.len() - 2..],
    );
    assert_eq!(
        r1.stages[..r1.stages.len() - 2],
        r2.stages[..r2.stages.len() - 2]
    );
    let totals = |stages: &[kiln_data::report::StageCount]| {
        let sum = |f: fn(&kiln_data::report::StageCount) -> u64| stages.iter().map(f).sum::<u64>();
        (
            sum(|s| s.docs_removed),
            sum(|s| s.bytes_removed),
            sum(|s| s.tokens_removed),
        )
    };
    assert_eq!(totals(dedup1), totals(dedup2));
    assert_eq!(dedup1[0].docs_in, dedup2[0].docs_in);
    let across: u64 = dedup2
        .iter()
        .filter_map(|s| s.reasons.get("across_workers"))
        .sum();
    assert!(across > 0);
}

#[test]
fn jsonl_text_and_token_shard_sources_and_their_errors() {
    let input = tempfile::tempdir().unwrap();
    let mut corpus = WebCorpus::with_mix(5, &[(WebDocKind::Article, 1.0)]);
    let docs: Vec<Document> = (0..40).map(|_| corpus.next_doc().1).collect();
    write_jsonl(&input.path().join("a.jsonl"), &docs[..20]).unwrap();
    let text_dir = input.path().join("notes");
    fs::create_dir(&text_dir).unwrap();
    for (i, d) in docs[20..].iter().enumerate() {
        fs::write(text_dir.join(format!("{i:02}.txt")), &d.text).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let mut jsonl = SourceConfig::files(
        SourceKind::Jsonl,
        &[input.path().join("a.jsonl").to_str().unwrap()],
    );
    jsonl.name = Some("jsonl".into());
    let mut text = SourceConfig::files(SourceKind::Text, &[text_dir.to_str().unwrap()]);
    text.name = Some("notes".into());
    let cfg = config(cache.path(), vec![jsonl, text]);
    let data = prepare(&cfg, &bpe(500), &mut quiet()).unwrap();
    assert_eq!(data.reports[0].docs_read, 20);
    assert_eq!(data.reports[1].docs_read, 20);
    assert_eq!(data.reports[1].files, 20);

    // The prepared shards, reused as a token_shards source with the same tokenizer.
    let mut shards = SourceConfig::files(SourceKind::TokenShards, &[]);
    shards.paths.clear();
    shards.name = Some("pretokenized".into());
    shards.train = vec![data.sources[0]
        .dir
        .join("u*.train.*.bin")
        .display()
        .to_string()];
    let tokenizer = TokenizerSpec::File {
        path: data.tokenizer_path.clone(),
    };
    let reuse = prepare(
        &config(cache.path(), vec![shards.clone()]),
        &tokenizer,
        &mut quiet(),
    )
    .unwrap();
    assert_eq!(reuse.sources[0].train_tokens, data.sources[0].train_tokens);
    assert!(reuse.sources[0].val_shards.is_empty());

    // The same ids as nanoGPT writes them (header-less u16 train.bin / val.bin): converted into
    // shards of at most `shard_tokens` (4096) tokens holding the same stream.
    let nanogpt = input.path().join("nanogpt");
    fs::create_dir(&nanogpt).unwrap();
    let raw = |shards: &[PathBuf]| -> Vec<u8> {
        token_stream(shards)
            .iter()
            .flat_map(|&t| (t as u16).to_le_bytes())
            .collect()
    };
    fs::write(
        nanogpt.join("train.bin"),
        raw(&data.sources[0].train_shards),
    )
    .unwrap();
    fs::write(nanogpt.join("val.bin"), raw(&data.sources[0].val_shards)).unwrap();
    let mut raw_source = shards.clone();
    raw_source.name = Some("nanogpt".into());
    raw_source.train = vec![nanogpt.join("train.bin").display().to_string()];
    raw_source.val = vec![nanogpt.join("val.bin").display().to_string()];
    raw_source.token_format = TokenFormat::RawU16;
    let converted = prepare(
        &config(cache.path(), vec![raw_source.clone()]),
        &tokenizer,
        &mut quiet(),
    )
    .unwrap();
    let c = &converted.sources[0];
    assert_eq!(
        token_stream(&c.train_shards),
        token_stream(&data.sources[0].train_shards)
    );
    assert_eq!(
        token_stream(&c.val_shards),
        token_stream(&data.sources[0].val_shards)
    );
    assert!(c.train_shards.len() as u64 >= c.train_tokens.div_ceil(4096));
    // An odd number of bytes is not a u16 file.
    fs::write(nanogpt.join("train.bin"), [1u8, 2, 3]).unwrap();
    let err = prepare(
        &config(cache.path(), vec![raw_source]),
        &tokenizer,
        &mut quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("train.bin") && err.contains("2-byte"), "{err}");

    // A tokenizer smaller than the shards' ids: named as a mismatch.
    let small = tempfile::tempdir().unwrap();
    let mut tiny_tok = docs.iter().map(|d| d.text.clone()).collect::<Vec<_>>();
    tiny_tok.truncate(5);
    let tiny = TextTokenizer::train_bpe(tiny_tok.iter(), 260, &[EOT.to_string()]).unwrap();
    let tiny_path = small.path().join("tiny.json");
    tiny.save(&tiny_path).unwrap();
    let err = prepare(
        &config(small.path(), vec![shards]),
        &TokenizerSpec::File { path: tiny_path },
        &mut quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("out of range for a vocabulary of"), "{err}");

    // Missing inputs: the error names the source and the pattern.
    let missing = SourceConfig::files(SourceKind::Parquet, &["nowhere/*.parquet"]);
    let err = prepare(
        &config(cache.path(), vec![missing]),
        &bpe(500),
        &mut quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("nowhere/*.parquet") && err.contains("parquet") && err.contains("fineweb"),
        "{err}"
    );
}
