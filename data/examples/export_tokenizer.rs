//! Trains a small tokenizer on synthetic stories and writes it plus reference encodings, for
//! checking interop with Python: `cargo run --release -p kiln-data --example export_tokenizer -- DIR`.
use kiln_data::*;

fn main() -> Result<(), DataError> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let mut g = StoryGenerator::new(0);
    let stories: Vec<String> = (0..2000).map(|_| g.next_story()).collect();
    let tok = TextTokenizer::train_bpe(stories.iter(), 1024, &[EOT.to_string()])?;
    tok.save(dir.join("tokenizer.json"))?;
    let texts = vec![
        stories[0].clone(),
        format!("{EOT}{}", stories[1]),
        "Ünïcode ✓ 🚀\ttab".to_string(),
    ];
    let ids = tok.encode_batch(&texts)?;
    let out = serde_json::json!({ "texts": texts, "ids": ids, "eot": tok.eot_id()?, "vocab": tok.vocab_size() });
    std::fs::write(dir.join("reference.json"), out.to_string())
        .map_err(|e| DataError::io(&dir, e))?;
    Ok(())
}
