#!/usr/bin/env python3
"""Write the tiny Hugging Face Jamba (hybrid Mamba-1 + attention) reference fixture.

Companion of ``scripts/make_mamba_fixtures.py`` (same conventions, same batch).  CI never runs
this script: its outputs are committed under ``tests/fixtures/jamba-tiny/`` and compared by
``arch/tests/hybrid.rs``.  Rerun it only when the fixture has to change.

Writes ``tests/fixtures/jamba-tiny/``:

* ``config.json``, ``generation_config.json``, ``model.safetensors`` -- ``JambaForCausalLM``
  ``save_pretrained``, float32, untied head (``lm_head.weight`` present).
* ``reference.safetensors`` -- ``input_ids`` int64 [2, 17]; ``logits`` f32 [2, 16, 96] =
  model(input_ids[:, :16], use_cache=False).logits; ``gen_logits`` f32 [2, 8, 96].
* ``reference.json`` -- ``input_ids``, ``loss`` (mean CE of the logits vs input_ids[:, 1:17]),
  ``grad_norms`` (per parameter, HF name), ``generation`` (prompt = input_ids[:, :5], 8 greedy
  tokens through ``HybridMambaAttentionDynamicCache``, i.e. ``generate(use_cache=True)``).

Model: vocab 96, hidden 32, 4 layers, attn_layer_period 2, offset 1 (layers 1 and 3 attention,
0 and 2 Mamba), 4 heads / 2 kv heads (head_dim 8), intermediate 64, mamba_d_state 8, d_conv 4,
expand 2, dt_rank 4, num_experts 1 (plain MLP everywhere), rms_norm_eps 1e-6,
use_mamba_kernels False, initializer_range 0.4.  No mamba-ssm / causal-conv1d / kernels
installed: transformers' pure-torch path.  Every RMSNorm weight (incl. dt/b/c_layernorm) is
set to 1 + 0.1 randn, conv1d.bias 0.1 randn, D 1 + 0.3 randn, A_log += 0.2 randn,
dt_proj.bias += 0.3 randn (generator SEED + 1, named_parameters() order).

Made with Python 3.11, torch 2.15.0 (CPU), transformers 5.24.0.

    /work/venv-hf/bin/python scripts/make_jamba_fixtures.py

Reverse direction (a kiln export loads in transformers with kiln's logits and greedy tokens):

    KILN_WRITE_EXPORT=/tmp/kiln-jamba-export cargo test --release -p kiln-arch \\
        --test hybrid write_export_for_hf_check
    python scripts/make_jamba_fixtures.py --check-export /tmp/kiln-jamba-export
"""

import os
import sys

import torch

torch.set_num_threads(1)

import safetensors.torch
from transformers import JambaConfig, JambaForCausalLM

from make_fixtures import BATCH, SEED, SEQ, ce_loss, versions, write_json
from ssm_fixtures import checked_generation, compare_export, grad_norms, perturb, reference_batch
from ssm_fixtures import main as fixture_main

MODEL_KW = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    attn_layer_period=2,
    attn_layer_offset=1,
    expert_layer_period=2,
    expert_layer_offset=1,
    num_experts=1,
    num_experts_per_tok=1,
    mamba_d_state=8,
    mamba_d_conv=4,
    mamba_expand=2,
    mamba_dt_rank=4,
    mamba_conv_bias=True,
    mamba_proj_bias=False,
    use_mamba_kernels=False,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    initializer_range=0.4,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)

PERTURB = [
    ("layernorm.weight", "set", 1.0, 0.1),
    ("conv1d.bias", "set", 0.0, 0.1),
    ("mamba.D", "set", 1.0, 0.3),
    ("mamba.A_log", "add", None, 0.2),
    ("dt_proj.bias", "add", None, 0.3),
]


def build_model(seed):
    config = JambaConfig(**MODEL_KW)
    torch.manual_seed(seed)
    model = JambaForCausalLM(config).to(torch.float32)
    perturb(model, PERTURB, seed + 1)
    model.eval()
    return model


def make_fixture(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    input_ids = reference_batch(MODEL_KW["vocab_size"])
    model = build_model(SEED)
    assert model.config.layers_block_type == ["mamba", "attention", "mamba", "attention"]
    model.save_pretrained(out_dir, safe_serialization=True)
    saved = safetensors.torch.load_file(os.path.join(out_dir, "model.safetensors"))
    assert "lm_head.weight" in saved

    with torch.no_grad():
        logits, loss = ce_loss(model, input_ids, use_cache=False)
        hf_loss = model(input_ids, labels=input_ids, use_cache=False).loss
    assert abs(hf_loss.item() - loss.item()) < 1e-5 * max(1.0, loss.item())
    reloaded = JambaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    with torch.no_grad():
        logits2, _ = ce_loss(reloaded, input_ids, use_cache=False)
    assert torch.equal(logits, logits2), "reload changed the logits"
    del reloaded

    grad_norms_ = grad_norms(model, input_ids)
    prompt, generated, gen_logits, cached_vs_full, margin = checked_generation(model, input_ids)

    safetensors.torch.save_file(
        {"input_ids": input_ids.contiguous(), "logits": logits.contiguous(),
         "gen_logits": gen_logits.float().contiguous()},
        os.path.join(out_dir, "reference.safetensors"),
        metadata={"format": "pt"},
    )
    ref = {
        "description": "HF JambaForCausalLM reference numbers for kiln; made by scripts/make_jamba_fixtures.py",
        "input_ids": input_ids.tolist(),
        "loss": loss.item(),
        "grad_norms": grad_norms_,
        "generation": {
            "prompt": prompt.tolist(),
            "generated": generated.tolist(),
            "how": "model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True, eos_token_id=None)",
            "cached_vs_full_forward_max_abs_diff": cached_vs_full,
            "min_top1_top2_logit_margin": margin,
        },
        "hyperparameters": {"seed": SEED, "model": MODEL_KW, "dtype": "float32",
                            "perturbations": [list(p) for p in PERTURB], "batch": BATCH, "seq_len": SEQ},
        "versions": versions(),
    }
    write_json(os.path.join(out_dir, "reference.json"), ref)
    return ref


def check_export(export_dir, tol):
    """Loads a kiln hybrid export with transformers; compares logits and greedy tokens."""
    model, problems, logits, kiln, generated, kiln_generated = compare_export(export_dir, JambaForCausalLM)
    max_diff = (logits - kiln["logits"]).abs().max().item()
    equal = bool(torch.equal(generated, kiln_generated))
    ok = not problems and max_diff < tol and equal
    print(f"{export_dir}: layers {model.config.layers_block_type}, max |logits(HF) - logits(kiln)| = "
          f"{max_diff:.3e} (tol {tol:g}), greedy tokens equal: {equal}, loading problems: {problems}, ok: {ok}")
    return 0 if ok else 1


def main():
    return fixture_main(__doc__, "jamba-tiny", make_fixture, check_export,
                        "check a kiln hybrid export (arch/tests/hybrid.rs write_export_for_hf_check)")


if __name__ == "__main__":
    sys.exit(main())
