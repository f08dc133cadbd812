#!/usr/bin/env python3
"""Write PEFT LoRA adapter fixtures for the tiny reference models in ``tests/fixtures/``.

CI never runs this script: its outputs are committed under ``tests/fixtures/peft-<base>/`` and
read by ``arch/tests/peft.rs``, so the Rust tests need no Python.  Rerun it (with ``peft``
installed) only when a fixture has to change.

For each base -- ``llama-tiny-tied``, ``mamba-tiny``, ``mamba2-tiny``, ``jamba-tiny`` (the
transformers fixtures the HF parity tests use) -- it loads the base with
``AutoModelForCausalLM.from_pretrained`` in float32, wraps it with
``peft.get_peft_model(base, LoraConfig(...))`` and writes ``tests/fixtures/peft-<base>/``:

* ``adapter_config.json``, ``adapter_model.safetensors`` -- ``PeftModel.save_pretrained``: PEFT's
  own names (``base_model.model.<HF name of the layer>.lora_A.weight`` ``[r, in]``,
  ``.lora_B.weight`` ``[out, r]``) and config (``r``, ``lora_alpha``, ``target_modules``,
  ``use_rslora``, ...).  ``init_lora_weights=False`` draws B at random too (PEFT's default B = 0
  would make the adapter a no-op and the test meaningless);
* ``reference.safetensors`` -- ``input_ids`` int64 [2, 16] (the base fixture's first 16 columns)
  and ``logits`` f32 [2, 16, vocab] of the PEFT model on them (``use_cache=False``);
* ``reference.json`` -- what was used (targets, rank, alpha, rsLoRA, seed) and the versions.

Targets: the Llama gets ``all-linear`` (PEFT resolves it to the seven projections, not the head);
Mamba ``in_proj, x_proj``; Mamba-2 ``in_proj`` with rsLoRA (scale alpha / sqrt(r)); Jamba every
projection but ``dt_proj`` (``out_proj`` included).  What PEFT + transformers cannot do, and so
these fixtures leave out: PEFT 0.22 refuses ``out_proj`` (and ``conv1d``) on ``model_type``
mamba / mamba2, when creating and when loading an adapter; and transformers 5's Mamba and Jamba
mixers compute ``dt_proj.weight @ time_step`` directly (the bias goes to the scan as
``delta_bias``), so a PEFT adapter on ``dt_proj`` is silently ignored there.  The script checks
that every adapter it writes moves the logits (zeroing one adapter's B must change them), so a
bypassed wrapper cannot slip into a fixture.  kiln's own Linear adapts all of these on every
path.
"""

import json
import pathlib
import sys

import peft
import safetensors.torch
import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SEED = 1234

CASES = [
    # (base fixture, target_modules, r, lora_alpha, use_rslora)
    ("llama-tiny-tied", "all-linear", 4, 8.0, False),
    ("mamba-tiny", ["in_proj", "x_proj"], 4, 8.0, False),
    ("mamba2-tiny", ["in_proj"], 4, 6.0, True),
    (
        "jamba-tiny",
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
         "in_proj", "x_proj", "out_proj"],
        2,
        4.0,
        False,
    ),
]


def write(base_name, targets, r, alpha, rslora):
    base_dir = FIXTURES / base_name
    out = FIXTURES / f"peft-{base_name}"
    out.mkdir(exist_ok=True)
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.eval()
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=targets,
        use_rslora=rslora,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    wrapped = peft.get_peft_model(model, config)
    wrapped.eval()
    wrapped.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # PEFT's model-card stub
    # The base as a path from the repository root, not this machine's absolute one.
    config_path = out / "adapter_config.json"
    saved_config = json.loads(config_path.read_text())
    saved_config["base_model_name_or_path"] = f"tests/fixtures/{base_name}"
    config_path.write_text(json.dumps(saved_config, indent=2, sort_keys=True) + "\n")
    ids = safetensors.torch.load_file(base_dir / "reference.safetensors")["input_ids"][:, :16]
    with torch.no_grad():
        logits = wrapped(input_ids=ids, use_cache=False).logits.float().contiguous()
    # Sanity: the adapter moves the logits (it is not a no-op) ...
    with wrapped.disable_adapter(), torch.no_grad():
        base_logits = wrapped(input_ids=ids, use_cache=False).logits
    moved = (logits - base_logits).abs().max().item()
    assert moved > 1e-2, f"{base_name}: adapter changes the logits by only {moved}"
    # Every adapter acts: zeroing any one of them changes the logits (no wrapper is bypassed).
    for name, module in wrapped.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer) and "default" in module.lora_B:
            weight = module.lora_B["default"].weight
            kept = weight.detach().clone()
            with torch.no_grad():
                weight.zero_()
                without = wrapped(input_ids=ids, use_cache=False).logits
                weight.copy_(kept)
            assert (without - logits).abs().max().item() > 1e-6, f"{base_name}: {name} is bypassed"
    # ... and reloading the saved adapter onto a fresh base gives the same logits.
    fresh = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    reloaded = peft.PeftModel.from_pretrained(fresh, out)
    with torch.no_grad():
        again = reloaded(input_ids=ids, use_cache=False).logits
    assert torch.equal(again, logits), f"{base_name}: reload differs"
    safetensors.torch.save_file(
        {"input_ids": ids.contiguous(), "logits": logits}, out / "reference.safetensors"
    )
    saved = safetensors.torch.load_file(out / "adapter_model.safetensors")
    (out / "reference.json").write_text(
        json.dumps(
            {
                "base": base_name,
                "target_modules": targets,
                "r": r,
                "lora_alpha": alpha,
                "use_rslora": rslora,
                "seed": SEED,
                "adapter_tensors": len(saved),
                "logits_moved_by_adapter": moved,
                "versions": {
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "peft": peft.__version__,
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"{out.relative_to(ROOT)}: {len(saved)} adapter tensors, adapter moves logits by {moved:.3f}")


def main():
    names = sys.argv[1:] or [c[0] for c in CASES]
    for case in CASES:
        if case[0] in names:
            write(*case)


if __name__ == "__main__":
    main()
