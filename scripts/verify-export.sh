#!/usr/bin/env bash
# Trains a tiny model of every architecture (Llama tied; Llama untied + MobileLLM layer sharing; Mamba-1;
# Mamba-2; Jamba-layout hybrid), exports each, and checks with Hugging Face transformers that the export
# loads as its class (LlamaForCausalLM, MambaForCausalLM, Mamba2ForCausalLM, JambaForCausalLM) with the
# same logits (max |diff| < 1e-4) and the same `train eval` loss (relative < 1e-4).
# Needs: pip install torch transformers safetensors numpy  (PYTHON=... picks the interpreter)
# Usage: scripts/verify-export.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
python="${PYTHON:-python3}"
mkdir -p "$work"
cargo build --release -q -p kiln-trainer
train=./target/release/train
cat > "$work/text.txt" <<'TXT'
Once upon a time, a little girl named Lily went to the park with her mom. She saw a big red ball under a
tree. "Can I play with it?" she asked. Her mom smiled and said yes. Lily was very happy.
TXT
while IFS='|' read -r name model; do
  cat > "$work/$name.yaml" <<YAML
name: verify-$name
model: $model
data: {sources: [{type: synthetic_stories, tokens: 60000, seed: 9}], val_fraction: 0.05, cache_dir: $work/data}
tokenizer: {type: train_bpe, vocab_size: 400, sample_docs: 300}
train: {max_steps: 40, micro_batch_size: 8, seq_len: 64, optimizer: {type: adamw, lr: 1.0e-2}, schedule: {type: cosine, warmup_steps: 4}, log_every_steps: 20}
eval: {every_steps: 0}
YAML
  $train --recipe "$work/$name.yaml" --out "$work/$name" >/dev/null 2>&1
  $train eval --model "$work/$name/export" --text "$work/text.txt" --seq-len 32 \
    --dump-logits "$work/$name-logits.safetensors" > "$work/$name-eval.json"
  echo -n "$name: "
  "$python" scripts/check_export.py --export "$work/$name/export" --kiln-logits "$work/$name-logits.safetensors" \
    --text "$work/text.txt" --seq-len 32 --kiln-eval-json "$work/$name-eval.json" | tail -1
done <<'MODELS'
llama-tied|{arch: llama, d_model: 64, n_layers: 3, n_heads: 4, n_kv_heads: 2, ffn_hidden: 128, max_seq_len: 64, tie_embeddings: true}
llama-untied-ls|{arch: llama, d_model: 64, n_layers: 3, n_heads: 4, n_kv_heads: 2, ffn_hidden: 128, max_seq_len: 64, tie_embeddings: false, layer_sharing: true}
mamba|{arch: mamba, d_model: 64, n_layers: 3, state_size: 8, dt_rank: 4}
mamba2|{arch: mamba2, d_model: 64, n_layers: 3, state_size: 16, head_dim: 32, chunk_size: 16}
hybrid|{arch: hybrid, d_model: 64, n_layers: 4, n_heads: 4, n_kv_heads: 2, ffn_hidden: 128, max_seq_len: 64, state_size: 8, dt_rank: 4, attn_every: 2, attn_offset: 1, tie_embeddings: false}
MODELS
