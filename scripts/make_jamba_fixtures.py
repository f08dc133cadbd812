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

import argparse
import os
import sys

import torch

torch.set_num_threads(1)

import safetensors.torch
from transformers import AutoModelForCausalLM, JambaConfig, JambaForCausalLM

from make_fixtures import BATCH, SEED, SEQ, ce_loss, versions, write_json
from make_mamba_fixtures import greedy, greedy_by_hand

PROMPT, NEW_TOKENS = 5, 8

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
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            for suffix, rule, base, scale in PERTURB:
                if name.endswith(suffix):
                    noise = scale * torch.randn(p.shape, generator=g)
                    p.copy_(base + noise if rule == "set" else p + noise)
                    break
    model.eval()
    return model


def make_fixture(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(SEED)
    input_ids = torch.randint(0, MODEL_KW["vocab_size"], (BATCH, SEQ + 1), generator=g, dtype=torch.int64)
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

    model.zero_grad(set_to_none=True)
    _, loss_g = ce_loss(model, input_ids, use_cache=False)
    loss_g.backward()
    grad_norms = {n: p.grad.norm().item() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    prompt = input_ids[:, :PROMPT].contiguous()
    with torch.no_grad():
        generated, gen_logits = greedy(model, prompt, NEW_TOKENS)
        by_hand = greedy_by_hand(model, prompt, NEW_TOKENS)
        full = model(torch.cat([prompt, generated], 1), use_cache=False).logits
    assert torch.equal(generated, by_hand), (generated, by_hand)
    cached_vs_full = (full[:, PROMPT - 1 : PROMPT - 1 + NEW_TOKENS] - gen_logits).abs().max().item()
    assert cached_vs_full < 1e-4, cached_vs_full
    top2 = gen_logits.topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]).min().item()
    assert margin > 1e-2, f"greedy choice too close to a tie: {margin}"

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
        "grad_norms": grad_norms,
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
    model, info = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32, output_loading_info=True)
    model.eval()
    problems = {k: v for k, v in info.items() if v}
    assert isinstance(model, JambaForCausalLM), type(model).__name__
    kiln = safetensors.torch.load_file(os.path.join(export_dir, "kiln_outputs.safetensors"))
    input_ids = kiln["input_ids"].round().long()
    with torch.no_grad():
        logits = model(input_ids, use_cache=False).logits
    max_diff = (logits - kiln["logits"]).abs().max().item()
    prompt = kiln["prompt"].round().long()
    with torch.no_grad():
        generated, _ = greedy(model, prompt, kiln["generated"].shape[1])
    equal = bool(torch.equal(generated, kiln["generated"].round().long()))
    ok = not problems and max_diff < tol and equal
    print(f"{export_dir}: layers {model.config.layers_block_type}, max |logits(HF) - logits(kiln)| = "
          f"{max_diff:.3e} (tol {tol:g}), greedy tokens equal: {equal}, loading problems: {problems}, ok: {ok}")
    return 0 if ok else 1


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--check-export", metavar="DIR",
                    help="check a kiln hybrid export (arch/tests/hybrid.rs write_export_for_hf_check)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    if args.check_export:
        return check_export(args.check_export, args.tol)
    d = os.path.normpath(os.path.join(args.out, "jamba-tiny"))
    ref = make_fixture(d)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{d}: {size} bytes, loss {ref['loss']:.6f}, generated {ref['generation']['generated']}, "
          f"cached vs full {ref['generation']['cached_vs_full_forward_max_abs_diff']:.2e}")
    assert size < 300_000, size
    return 0


if __name__ == "__main__":
    sys.exit(main())
