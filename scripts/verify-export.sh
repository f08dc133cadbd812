#!/usr/bin/env bash
# Trains the shipped tiny recipes at FULL length (tinystories-tiny: Llama; tinystories-mamba;
# tinystories-mamba2; tinystories-hybrid: Jamba layout; plus the quickstart with an untied head and
# MobileLLM layer sharing), exports each, and checks with Hugging Face transformers
# (scripts/check_export.py) that the export
#   - loads as its class (LlamaForCausalLM, MambaForCausalLM, Mamba2ForCausalLM, JambaForCausalLM)
#     with no missing, unexpected or mismatched tensors,
#   - is not changed by loading: the loaded model's state dict equals the file bit for bit,
#   - gives kiln's logits (max |diff| < 1e-4) and kiln's `train eval` loss (relative < 1e-4) on a
#     story the model generated itself followed by a held-out story.
# Full length matters: after a few dozen steps the weights are still close to their init, and a
# load-time init rule that rewrites them (e.g. Mamba's `rescale_prenorm_residual`) changes the
# logits too little to notice. Prints one line per model and a table of the two losses.
#
# Needs: pip install torch transformers safetensors numpy  (PYTHON=... picks the interpreter)
# Usage: scripts/verify-export.sh [WORKDIR]     (RECIPES="tinystories-mamba ..." picks a subset)
# Time on the 2-core machine: about 17 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(realpath -m "${1:-$(mktemp -d)}")"
python="${PYTHON:-python3}"
mkdir -p "$work"
cargo build --release -q -p kiln-trainer
train=./target/release/train
"$python" scripts/check_export.py --self-test tests/fixtures/mamba-tiny | tail -1

cat > "$work/held-out.txt" <<'TXT'
Once upon a time, a little girl named Lily went to the park with her mom. She saw a big red ball under a
tree. "Can I play with it?" she asked. Her mom smiled and said yes. Lily was very happy. She kicked the
ball and it rolled far away, past the swings and the slide. A small dog ran after it and brought it back.
TXT

status=0
table=""
while IFS='|' read -r name recipe sets; do
  [[ -z "${RECIPES:-}" || " $RECIPES " == *" $recipe "* ]] || continue
  run="$work/$name"
  # shellcheck disable=SC2086  # $sets is a list of --set arguments
  $train --recipe "recipes/$recipe.yaml" --out "$run" $sets --set name="$name" > "$work/$name.log" 2>&1
  $train generate --model "$run/export" --prompt "Once upon a time" --max-new-tokens 200 --temperature 0.8 \
    --seed 1 > "$work/$name-text.txt" 2>/dev/null
  cat "$work/held-out.txt" >> "$work/$name-text.txt"
  $train eval --model "$run/export" --text "$work/$name-text.txt" --seq-len 128 \
    --dump-logits "$work/$name-logits.safetensors" > "$work/$name-eval.json"
  echo -n "$name: "
  if "$python" scripts/check_export.py --export "$run/export" --kiln-logits "$work/$name-logits.safetensors" \
      --text "$work/$name-text.txt" --seq-len 128 --kiln-eval-json "$work/$name-eval.json" \
      > "$work/$name-check.txt" 2>&1; then
    tail -1 "$work/$name-check.txt"
  else
    status=1
    grep '^FAIL' "$work/$name-check.txt" || true
    tail -1 "$work/$name-check.txt"
  fi
  table+="$("$python" - "$work/$name-check.txt" "$name" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(f"| {sys.argv[2]} | {s.get('model_class')} | {s.get('kiln_loss', float('nan')):.4f} | "
      f"{s.get('hf_loss', float('nan')):.4f} | {s.get('loss_rel_diff', float('nan')):.1e} | "
      f"{s.get('logits_max_abs_diff', float('nan')):.1e} | {s.get('tensors_changed_on_load')} of {s.get('tensors_compared')} | {'ok' if s['ok'] else 'FAIL'} |")
PY
)"$'\n'
done <<'MODELS'
llama|tinystories-tiny|
llama-untied-ls|tinystories-tiny|--set model.tie_embeddings=false --set model.layer_sharing=true
mamba|tinystories-mamba|
mamba2|tinystories-mamba2|
hybrid|tinystories-hybrid|
MODELS
echo
echo "| model | class | kiln eval loss | transformers loss | rel diff | max abs logit diff | tensors changed on load | |"
echo "|---|---|---|---|---|---|---|---|"
echo -n "$table"
exit $status
