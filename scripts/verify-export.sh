#!/usr/bin/env bash
# Trains two tiny models (tied, and untied + MobileLLM layer sharing), exports them, and checks with
# Hugging Face transformers that each export loads as LlamaForCausalLM with the same logits
# (max |diff| < 1e-4) and the same `train eval` loss. Needs: pip install torch transformers safetensors
# Usage: scripts/verify-export.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
cargo build --release -q -p kiln-trainer
train=./target/release/train
cat > "$work/text.txt" <<'TXT'
Once upon a time, a little girl named Lily went to the park with her mom. She saw a big red ball under a
tree. "Can I play with it?" she asked. Her mom smiled and said yes. Lily was very happy.
TXT
for variant in "tied:model.tie_embeddings=true:model.layer_sharing=false" \
               "untied-ls:model.tie_embeddings=false:model.layer_sharing=true"; do
  IFS=: read -r name tie ls <<<"$variant"
  cat > "$work/$name.yaml" <<YAML
name: verify-$name
model: {arch: llama, d_model: 64, n_layers: 3, n_heads: 4, n_kv_heads: 2, ffn_hidden: 128, max_seq_len: 64}
data: {sources: [{type: synthetic_stories, tokens: 60000, seed: 9}], val_fraction: 0.05, cache_dir: $work/data}
tokenizer: {type: train_bpe, vocab_size: 400, sample_docs: 300}
train: {max_steps: 40, micro_batch_size: 8, seq_len: 64, optimizer: {type: adamw, lr: 1.0e-2}, schedule: {type: cosine, warmup_steps: 4}, log_every_steps: 20}
eval: {every_steps: 0}
YAML
  $train --recipe "$work/$name.yaml" --set "$tie" --set "$ls" --out "$work/$name" >/dev/null 2>&1
  $train eval --model "$work/$name/export" --text "$work/text.txt" --seq-len 32 \
    --dump-logits "$work/$name-logits.safetensors" > "$work/$name-eval.json"
  python3 scripts/check_export.py --export "$work/$name/export" --kiln-logits "$work/$name-logits.safetensors" \
    --text "$work/text.txt" --seq-len 32 --kiln-eval-json "$work/$name-eval.json" | tail -1
done
