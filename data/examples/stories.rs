//! Prints sample stories and statistics: `cargo run --release -p kiln-data --example stories -- [n] [seed]`.
use kiln_data::StoryGenerator;
use std::collections::HashSet;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let seed: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut g = StoryGenerator::new(seed);
    let t = std::time::Instant::now();
    let stories: Vec<String> = (0..n).map(|_| g.next_story()).collect();
    let dt = t.elapsed().as_secs_f64();
    let show = if std::env::var("ALL").is_ok() { n } else { 5 };
    for s in stories.iter().take(show) {
        println!("{s}\n-----");
    }
    let words: HashSet<String> = stories
        .iter()
        .flat_map(|s| s.split(|c: char| !(c.is_alphabetic() || c == '\'' || c == '-')))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '-').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    let distinct: HashSet<&String> = stories.iter().collect();
    let n_words: usize = stories.iter().map(|s| s.split_whitespace().count()).sum();
    let bytes: usize = stories.iter().map(|s| s.len()).sum();
    println!(
        "{n} stories in {dt:.3}s ({:.0} stories/s, {:.1} MB/s), distinct {}, mean words {:.1}, vocab {}",
        n as f64 / dt,
        bytes as f64 / dt / 1e6,
        distinct.len(),
        n_words as f64 / n as f64,
        words.len()
    );
    if std::env::var("VOCAB").is_ok() {
        let mut v: Vec<_> = words.into_iter().collect();
        v.sort();
        println!("{}", v.join(" "));
    }
}
