#!/usr/bin/env python3
"""Write the small Hugging Face reference fixtures that kiln's Rust tests compare against.

CI never runs this script: its outputs are committed under ``tests/fixtures/`` so the Rust
tests need no Python.  Rerun it only when a fixture has to change.

What it writes (one directory per tiny config, each well under 200 KB):

    tests/fixtures/llama-tiny-untied/   tie_word_embeddings = false
    tests/fixtures/llama-tiny-tied/     tie_word_embeddings = true

Each directory holds

* ``config.json``, ``generation_config.json``, ``model.safetensors`` -- written by
  ``LlamaForCausalLM.save_pretrained(dir, safe_serialization=True)``, all tensors float32.
  (In the tied directory there is no ``lm_head.weight``; the head is ``model.embed_tokens.weight``.)
* ``reference.safetensors`` -- tensors
    - ``input_ids``  int64 [2, 17]
    - ``logits``     f32   [2, 16, 96] = model(input_ids[:, :16]).logits  (initial weights)
* ``reference.json`` -- ``input_ids`` (same [2, 17] batch), ``loss`` (mean cross-entropy of the
  logits above against ``input_ids[:, 1:17]``), ``train`` (5 AdamW steps on that batch: for each
  step the loss whose gradient is used, i.e. before the update, and the pre-clip global grad
  norm returned by ``clip_grad_norm_``), ``loss_after_train`` (loss after the 5 updates),
  ``grad_norms_step0`` (L2 norm of each parameter's gradient at step 0, before clipping),
  ``param_norms_after_train`` (L2 norm of each parameter after the 5 updates), the
  hyper-parameters, and the versions of the libraries that produced the numbers.

Model: vocab 96, hidden 32, intermediate 88, 2 layers, 4 heads / 2 kv heads, head_dim 8,
max_position_embeddings 64, rope_theta 10000, rms_norm_eps 1e-5, bos = eos = 0,
initializer_range 0.2 (large, so the logits are far from 0), eager attention, float32.  The
RMSNorm weights are re-drawn as 1 + 0.1 * randn so that the norm weights are exercised too.

Optimizer: torch.optim.AdamW(lr=1e-2, betas=(0.9, 0.95), eps=1e-8) with two param groups:
weight_decay 0.1 for parameters with ndim >= 2 (all linear weights and the embedding) and 0.0 for
ndim < 2 (the RMSNorm weights).  Before each step, ``clip_grad_norm_(params, 1.0)`` (global L2
norm over all parameters; a tied embedding/head is a single parameter and counts once).
Loss = mean token cross-entropy over the whole [2, 16] batch.

Run (from the repository root; CPU only, takes a few seconds):

    pip install torch transformers safetensors numpy
    python scripts/make_fixtures.py            # writes tests/fixtures/llama-tiny-{untied,tied}/
    python scripts/make_fixtures.py --out DIR  # somewhere else

The committed fixtures were made with: Python 3.11.7, torch 2.15.0 (+cu132 wheel, run on CPU),
transformers 5.23.0, safetensors 0.8.0, numpy 2.4.6, tokenizers 0.23.3.  Numbers from other
torch versions may differ in the last float32 bits; compare with tolerances (~1e-5 relative).
"""

import argparse
import json
import os
import platform
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)

import safetensors
import safetensors.torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

SEED = 1234
BATCH, SEQ = 2, 16  # the model sees [2, 16]; input_ids is [2, 17] (targets shifted by one)
TRAIN_STEPS = 5
LR, BETAS, EPS, WD, CLIP = 1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0

MODEL_KW = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=88,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=0,
    initializer_range=0.2,
    hidden_act="silu",
    attention_bias=False,
    mlp_bias=False,
)


def build_model(tied: bool, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(tie_word_embeddings=tied, **MODEL_KW)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    # LlamaForCausalLM's init: normal(0, initializer_range) for Linear/Embedding, ones for norms.
    # Re-draw the norm weights so they are not all 1.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    else:
        assert model.lm_head.weight is not model.model.embed_tokens.weight
    model.eval()  # no dropout anywhere anyway (attention_dropout 0)
    return model


def ce_loss(model, input_ids, **forward_kw):
    """Logits of ``input_ids[:, :16]`` and their mean cross-entropy against ``input_ids[:, 1:17]``."""
    logits = model(input_ids[:, :SEQ], **forward_kw).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1 : SEQ + 1].reshape(-1))
    return logits, loss


def versions() -> dict:
    """The versions of the libraries that produced a fixture's numbers."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def write_json(path: str, obj: dict) -> None:
    """Indented JSON, with lists of plain numbers (input_ids rows, shapes, betas) on one line."""
    text = json.dumps(obj, indent=1)
    text = re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    assert json.loads(text) == obj
    with open(path, "w") as f:
        f.write(text + "\n")


def make_one(out_dir: str, tied: bool, input_ids: torch.Tensor, seed: int) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    model = build_model(tied, seed)
    model.save_pretrained(out_dir, safe_serialization=True)

    # Sanity: what we saved reloads to the same numbers.
    with torch.no_grad():
        logits, loss = ce_loss(model, input_ids)
        # HF's own loss (it shifts labels internally) on the full 17 tokens predicts the same 16 targets.
        hf_loss = model(input_ids, labels=input_ids).loss
    assert abs(hf_loss.item() - loss.item()) < 1e-5 * max(1.0, loss.item()), (hf_loss.item(), loss.item())
    reloaded = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        logits2, _ = ce_loss(reloaded, input_ids)
    assert torch.equal(logits, logits2), "reload changed the logits"
    del reloaded

    safetensors.torch.save_file(
        {"input_ids": input_ids.contiguous(), "logits": logits.contiguous()},
        os.path.join(out_dir, "reference.safetensors"),
        metadata={"format": "pt"},
    )

    # ---- training reference ----
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():  # a tied embedding/head appears once
        (decay if p.ndim >= 2 else no_decay).append(p)
        (decay_names if p.ndim >= 2 else no_decay_names).append(name)
    params = decay + no_decay
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=EPS,
    )
    model.train()
    steps, grad_norms_step0 = [], None
    for step in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        _, loss_t = ce_loss(model, input_ids)
        loss_t.backward()
        if step == 0:
            grad_norms_step0 = {n: p.grad.norm().item() for n, p in model.named_parameters()}
        gn = torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        steps.append({"step": step, "loss": loss_t.item(), "grad_norm": gn.item()})
    model.eval()
    with torch.no_grad():
        _, loss_after = ce_loss(model, input_ids)
    param_norms_after = {n: p.detach().norm().item() for n, p in model.named_parameters()}

    ref = {
        "description": "HF LlamaForCausalLM reference numbers for kiln; made by scripts/make_fixtures.py",
        "input_ids": input_ids.tolist(),
        "input_ids_shape": list(input_ids.shape),
        "logits": "reference.safetensors:logits, f32 [2, 16, 96], model(input_ids[:, :16]).logits",
        "loss": loss.item(),
        "train": steps,
        "loss_after_train": loss_after.item(),
        "grad_norms_step0": grad_norms_step0,
        "param_norms_after_train": param_norms_after,
        "hyperparameters": {
            "seed": seed,
            "tie_word_embeddings": tied,
            "model": MODEL_KW,
            "attn_implementation": "eager",
            "dtype": "float32",
            "norm_weight_init": "1 + 0.1 * randn",
            "batch": BATCH,
            "seq_len": SEQ,
            "loss": "mean cross-entropy over all batch*seq_len tokens; logits(input_ids[:, :16]) vs input_ids[:, 1:17]",
            "optimizer": {
                "type": "torch.optim.AdamW",
                "lr": LR,
                "betas": list(BETAS),
                "eps": EPS,
                "param_groups": [
                    {"weight_decay": WD, "rule": "ndim >= 2", "params": decay_names},
                    {"weight_decay": 0.0, "rule": "ndim < 2", "params": no_decay_names},
                ],
            },
            "clip_grad_norm": {"max_norm": CLIP, "norm_type": 2, "recorded": "pre-clip total norm returned by clip_grad_norm_"},
            "steps": TRAIN_STEPS,
            "step_loss": "loss before the update (the loss whose gradient is used)",
        },
        "versions": versions(),
    }
    write_json(os.path.join(out_dir, "reference.json"), ref)
    return ref


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)

    g = torch.Generator().manual_seed(SEED)
    input_ids = torch.randint(0, MODEL_KW["vocab_size"], (BATCH, SEQ + 1), generator=g, dtype=torch.int64)

    for name, tied in (("llama-tiny-untied", False), ("llama-tiny-tied", True)):
        d = os.path.normpath(os.path.join(args.out, name))
        ref = make_one(d, tied, input_ids, SEED)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{d}: {size} bytes, loss {ref['loss']:.6f}, "
              f"steps {[round(s['loss'], 6) for s in ref['train']]}, "
              f"grad_norms {[round(s['grad_norm'], 6) for s in ref['train']]}, "
              f"after {ref['loss_after_train']:.6f}")
        assert size < 200_000, f"{d} is {size} bytes"


if __name__ == "__main__":
    sys.exit(main())
