#!/usr/bin/env python3
"""Check that a kiln LoRA export loads in PEFT and gives kiln's logits.

Usage (from the repository root):

    python scripts/check_peft_export.py --adapter RUN/export --kiln-logits FILE.safetensors

``RUN/export`` is the export of a kiln LoRA run (``adapter_config.json`` +
``adapter_model.safetensors``); its ``base_model_name_or_path`` names the base directory.
``FILE.safetensors`` is what ``train eval --model RUN/export --text T --dump-logits FILE`` writes
(``input_ids`` [1, n], ``logits`` [1, n, vocab]: kiln's forward of the adapted model).

Checks, in order:

1. ``peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)`` loads
   with no missing or unexpected adapter tensors, and the loaded ``lora_A`` / ``lora_B`` weights
   equal the file's bit for bit (PEFT's state dict after loading, not only the file);
2. the adapted model's logits on kiln's ``input_ids`` match kiln's within ``--logits-tol``
   (default 1e-4), and differ from the base's (the adapter does something);
3. ``merge_and_unload()`` gives the same logits (within the tolerance).

Exit status 0 when every check passes; the last line is a JSON summary.
"""

import argparse
import json
import pathlib
import sys

import peft
import safetensors.torch
import torch
import transformers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", required=True, type=pathlib.Path)
    ap.add_argument("--kiln-logits", required=True, type=pathlib.Path)
    ap.add_argument("--logits-tol", type=float, default=1e-4)
    args = ap.parse_args()

    config = json.loads((args.adapter / "adapter_config.json").read_text())
    base_dir = config["base_model_name_or_path"]
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base.eval()
    kiln = safetensors.torch.load_file(args.kiln_logits)
    ids = kiln["input_ids"].long()
    with torch.no_grad():
        base_logits = base(input_ids=ids, use_cache=False).logits

    model = peft.PeftModel.from_pretrained(base, args.adapter)
    model.eval()
    failures = []

    # 1. The loaded adapter weights are the file's.
    saved = safetensors.torch.load_file(args.adapter / "adapter_model.safetensors")
    state = peft.get_peft_model_state_dict(model)
    if set(state) != set(saved):
        failures.append(
            f"adapter names: missing {sorted(set(saved) - set(state))[:5]}, "
            f"extra {sorted(set(state) - set(saved))[:5]}"
        )
    changed = [k for k in saved if k in state and not torch.equal(state[k].float(), saved[k])]
    if changed:
        failures.append(f"{len(changed)} adapter tensors changed on load, e.g. {changed[0]}")

    # 2. Logits.
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    diff = (logits - kiln["logits"]).abs().max().item()
    moved = (logits - base_logits).abs().max().item()
    if diff >= args.logits_tol:
        failures.append(f"logits differ from kiln's by {diff}")
    if moved < 1e-3:
        failures.append(f"the adapter moves the logits by only {moved}")

    # 3. Merged.
    merged = model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids, use_cache=False).logits
    merged_diff = (merged_logits - kiln["logits"]).abs().max().item()
    if merged_diff >= args.logits_tol:
        failures.append(f"merged logits differ from kiln's by {merged_diff}")

    for f in failures:
        print("FAIL:", f)
    summary = {
        "ok": not failures,
        "adapter_tensors": len(saved),
        "max_logits_diff": diff,
        "merged_max_logits_diff": merged_diff,
        "adapter_moves_logits_by": moved,
        "peft": peft.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(summary))
    sys.exit(0 if not failures else 1)


if __name__ == "__main__":
    main()
