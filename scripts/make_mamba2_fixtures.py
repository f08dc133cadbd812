#!/usr/bin/env python3
"""Write the tiny Hugging Face Mamba-2 reference fixture (``tests/fixtures/mamba2-tiny/``).

Companion of ``scripts/make_mamba_fixtures.py`` (same conventions; helpers imported from it and
from ``scripts/make_fixtures.py``).  CI never runs this script: its outputs are committed and
compared by ``arch/tests/mamba2_hf_parity.rs``.

Files:

* ``config.json``, ``generation_config.json``, ``model.safetensors``: ``Mamba2ForCausalLM.
  save_pretrained`` (float32, tied head, so no ``lm_head.weight``).  ``time_step_limit`` is
  written by transformers as ``[0.0, {"__float__": "Infinity"}]``.
* ``reference.safetensors``: ``input_ids`` int64 [2, 17]; ``logits`` f32 [2, 16, 96] =
  ``model(input_ids[:, :16], use_cache=False).logits`` (two chunks of 8); ``logits13`` f32
  [2, 13, 96] = the same on ``input_ids[:, :13]`` (a padded last chunk); ``gen_logits`` f32
  [2, 8, 96], the logits each greedy token was chosen from.
* ``reference.json``: ``input_ids``, ``loss`` (mean CE of ``logits`` against
  ``input_ids[:, 1:17]``), ``grad_norms`` (per parameter, ``named_parameters()`` names),
  ``generation`` (``prompt`` = ``input_ids[:, :5]``, ``generated`` = 8 greedy tokens through
  HF's cache: prompt by the chunked path, then one recurrent step per token), hyperparameters,
  versions.

Model: vocab 96, hidden 32, expand 2 (intermediate 64), num_heads 4, head_dim 16, n_groups 1,
state 8, conv 4, chunk_size 8, 2 layers, tied, initializer_range 0.4, bos = eos = pad = 0.
No mamba-ssm / causal-conv1d / kernels: transformers runs its pure-torch path
(``mamba2_chunk_scan``, ``mamba2_selective_state_update``).  Weights: HF init, then perturbed
(generator seeded SEED + 1, ``named_parameters()`` order): every norm weight (block norms,
gated ``mixer.norm``, ``norm_f``) ``1 + 0.1 randn``; ``conv1d.bias`` ``0.1 randn``; ``D``
``1 + 0.3 randn``; ``A_log += 0.2 randn``; ``dt_bias += 0.3 randn``.

Run: ``/work/venv-hf/bin/python scripts/make_mamba2_fixtures.py`` (CPU, seconds).
"""

import os
import sys

import torch

torch.set_num_threads(1)

import safetensors.torch
from transformers import Mamba2Config, Mamba2ForCausalLM

from make_fixtures import SEED, ce_loss, versions, write_json
from ssm_fixtures import checked_generation, grad_norms, perturb, perturbation_doc, reference_batch
from ssm_fixtures import main as fixture_main

SHORT = 13  # not a multiple of chunk_size

MODEL_KW = dict(
    vocab_size=96,
    hidden_size=32,
    expand=2,
    num_heads=4,
    head_dim=16,
    n_groups=1,
    state_size=8,
    conv_kernel=4,
    chunk_size=8,
    num_hidden_layers=2,
    tie_word_embeddings=True,
    layer_norm_epsilon=1e-5,
    use_bias=False,
    use_conv_bias=True,
    residual_in_fp32=True,
    initializer_range=0.4,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)

PERTURB = [
    ("norm.weight", "set", 1.0, 0.1),
    ("norm_f.weight", "set", 1.0, 0.1),
    ("mixer.conv1d.bias", "set", 0.0, 0.1),
    ("mixer.D", "set", 1.0, 0.3),
    ("mixer.A_log", "add", None, 0.2),
    ("mixer.dt_bias", "add", None, 0.3),
]


def build_model(seed: int) -> Mamba2ForCausalLM:
    torch.manual_seed(seed)
    model = Mamba2ForCausalLM(Mamba2Config(**MODEL_KW)).to(torch.float32)
    perturb(model, PERTURB, seed + 1)
    assert model.lm_head.weight is model.backbone.embeddings.weight
    model.eval()
    return model


def make_fixture(out_dir: str) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    input_ids = reference_batch(MODEL_KW["vocab_size"])
    model = build_model(SEED)
    model.save_pretrained(out_dir, safe_serialization=True)
    saved = safetensors.torch.load_file(os.path.join(out_dir, "model.safetensors"))
    assert "lm_head.weight" not in saved

    with torch.no_grad():
        logits, loss = ce_loss(model, input_ids, use_cache=False)
        logits13 = model(input_ids[:, :SHORT], use_cache=False).logits
    assert (logits13 - logits[:, :SHORT]).abs().max().item() < 1e-4
    reloaded = Mamba2ForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(logits, ce_loss(reloaded, input_ids, use_cache=False)[0])
    del reloaded

    grad_norms_ = grad_norms(model, input_ids)
    prompt, generated, gen_logits, cached_vs_full, margin = checked_generation(model, input_ids)

    safetensors.torch.save_file(
        {
            "input_ids": input_ids.contiguous(),
            "logits": logits.contiguous(),
            "logits13": logits13.contiguous(),
            "gen_logits": gen_logits.float().contiguous(),
        },
        os.path.join(out_dir, "reference.safetensors"),
        metadata={"format": "pt"},
    )
    ref = {
        "description": "HF Mamba2ForCausalLM reference numbers for kiln; made by scripts/make_mamba2_fixtures.py",
        "input_ids": input_ids.tolist(),
        "loss": loss.item(),
        "grad_norms": grad_norms_,
        "generation": {
            "prompt": prompt.tolist(),
            "generated": generated.tolist(),
            "cached_vs_full_forward_max_abs_diff": cached_vs_full,
            "min_top1_top2_logit_margin": margin,
        },
        "hyperparameters": {
            "seed": SEED,
            "model": MODEL_KW,
            "short_len": SHORT,
            "perturbations": perturbation_doc(PERTURB),
        },
        "versions": versions(),
    }
    write_json(os.path.join(out_dir, "reference.json"), ref)
    return ref


def main():
    return fixture_main(__doc__, "mamba2-tiny", make_fixture)


if __name__ == "__main__":
    sys.exit(main())
