//! Measures story generation, tokenization and a full `prepare` run:
//! `cargo run --release -p kiln-data --example throughput -- [million_tokens]`.
use kiln_data::*;
use std::time::Instant;

/// User + system CPU seconds of this process (Linux; 0 elsewhere). On a shared machine,
/// throughput per CPU-second is steadier than per wall-second.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After "pid (name)": state, ppid, … utime (field 14) and stime (field 15), in 1/100 s.
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn main() -> Result<(), DataError> {
    let mtok: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10.0);
    let threads = rayon::current_num_threads();

    let t = Instant::now();
    let mut g = StoryGenerator::new(0);
    let stories: Vec<String> = (0..50_000).map(|_| g.next_story()).collect();
    let dt = t.elapsed().as_secs_f64();
    let bytes: usize = stories.iter().map(|s| s.len()).sum();
    println!(
        "generation (1 thread): {:.0} stories/s, {:.1} MB/s",
        50_000.0 / dt,
        bytes as f64 / dt / 1e6
    );

    let t = Instant::now();
    let tok = TextTokenizer::train_bpe(stories[..5_000].iter(), 4096, &[EOT.to_string()])?;
    println!(
        "BPE training (vocab 4096, 5k stories): {:.2}s",
        t.elapsed().as_secs_f64()
    );

    let (t, cpu) = (Instant::now(), cpu_seconds());
    let ids = tok.encode_batch(&stories)?;
    let (dt, dcpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let n: usize = ids.iter().map(|v| v.len()).sum();
    println!(
        "tokenization ({threads} threads): {:.0} stories/s, {:.2}M tokens/s wall, {:.2}M tokens per CPU-second ({:.1} tokens/story, {:.2} bytes/token)",
        50_000.0 / dt,
        n as f64 / dt / 1e6,
        n as f64 / dcpu / 1e6,
        n as f64 / 50_000.0,
        bytes as f64 / n as f64
    );

    let root = std::env::temp_dir().join(format!("kiln-throughput-{}", std::process::id()));
    let mut config = DataConfig::new(vec![SourceConfig::synthetic_stories(
        (mtok * 1e6) as u64,
        1,
    )]);
    config.val_fraction = 0.01;
    config.shard_tokens = 1 << 22;
    config.cache_dir = root.clone();
    let tokenizer = TokenizerSpec::TrainBpe {
        vocab_size: 4096,
        sample_docs: 5_000,
        special_tokens: vec![EOT.to_string()],
    };
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let data = prepare(&config, &tokenizer, &mut |l: &str| println!("  {l}"))?;
    let (dt, dcpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    let total = data.train_tokens() + data.val_tokens();
    println!(
        "prepare end to end: {:.2}M tokens in {dt:.1}s = {:.2}M tokens/s wall, {:.2}M tokens per CPU-second",
        total as f64 / 1e6,
        total as f64 / dt / 1e6,
        total as f64 / dcpu / 1e6
    );
    let t = Instant::now();
    prepare(&config, &tokenizer, &mut |_: &str| {})?;
    println!("prepare reuse: {:.3}s", t.elapsed().as_secs_f64());
    std::fs::remove_dir_all(&root).map_err(|e| DataError::io(&root, e))?;
    Ok(())
}
