#!/usr/bin/env python3
"""Write the tiny Hugging Face Mamba-1 reference fixture, or check a kiln Mamba export against HF.

Companion of ``scripts/make_fixtures.py`` (the Llama fixtures; same conventions).  CI never runs
this script: its outputs are committed under ``tests/fixtures/mamba-tiny/`` and compared by
``arch/tests/mamba_hf_parity.rs``, so the Rust tests need no Python.  Rerun it only when the
fixture has to change.

Mode 1, fixtures (default): writes ``tests/fixtures/mamba-tiny/`` (about 100 KB):

* ``config.json``, ``generation_config.json``, ``model.safetensors`` -- written by
  ``MambaForCausalLM.save_pretrained(dir, safe_serialization=True)``, all tensors float32.  The
  head is tied, so there is no ``lm_head.weight``; the head is ``backbone.embeddings.weight``.
* ``reference.safetensors`` -- tensors
    - ``input_ids``   int64 [2, 17]
    - ``logits``      f32   [2, 16, 96] = model(input_ids[:, :16], use_cache=False).logits
    - ``gen_logits``  f32   [2, 8, 96]: the logits each greedy step below chose its token from
      (``generate(..., output_logits=True)``; step 0 is the prompt's last position)
* ``reference.json`` --
    - ``input_ids`` (the same [2, 17] batch);
    - ``loss``: mean cross-entropy of the logits above against ``input_ids[:, 1:17]`` (all 32
      positions);
    - ``grad_norms``: for every parameter (HF name, as ``named_parameters()`` lists it: the tied
      embedding/head appears once, as ``backbone.embeddings.weight``, and its gradient is the sum
      of both uses), the L2 norm of d loss / d parameter;
    - ``generation``: ``prompt`` = ``input_ids[:, :5]``; ``generated`` = the 8 tokens greedy
      decoding appends (``model.generate(prompt, max_new_tokens=8, do_sample=False,
      use_cache=True)`` with no EOS, so exactly 8 tokens; the model's recurrent cache: the prompt
      goes through the full-sequence path once, then one recurrent step per token).  The script
      checks that a hand-written loop -- one forward on the prompt with ``use_cache=True``, then
      one token at a time with the returned cache -- picks the same tokens;
    - ``hyperparameters`` (config, seeds, perturbations) and ``versions``.

Model: ``MambaForCausalLM`` in float32, vocab 96, hidden 32, state_size 8, expand 2
(intermediate 64), conv_kernel 4, time_step_rank 4, 2 layers, tied embeddings,
layer_norm_epsilon 1e-5, use_bias false, use_conv_bias true, residual_in_fp32 true (a no-op in
float32), use_mambapy false, initializer_range 0.4 (large: the
logits are far from uniform and greedy decoding does not just repeat one token), bos = eos = pad = 0.  mamba-ssm and
causal-conv1d are not installed (nor the ``kernels`` package), so transformers runs its slow
pure-torch path: ``F.conv1d(padding=K-1)[..., :l]``, the sequential scan loop of
``mamba_selective_scan``, ``mamba_selective_state_update`` for cached single tokens.

Weights come from HF's own init (``_init_weights``: Linear ~ normal(0, 0.4) except ``out_proj``
and ``conv1d.weight`` (kaiming uniform), ``dt_proj`` (uniform +-R^-0.5, bias = softplus^-1 of a
log-uniform step), ``A_log = ln(1..N)``, ``D = 1``, conv bias 0, embedding normal(0, 0.4)), then
perturbed so that every parameter is exercised with non-default values (generator seeded
``SEED + 1``, in ``named_parameters()`` order):

* every RMSNorm weight (``layers.*.norm``, ``norm_f``): ``1 + 0.1 * randn``;
* ``conv1d.bias``: ``0.1 * randn`` (HF zeroes it);
* ``D``: ``1 + 0.3 * randn``;
* ``A_log``: ``+= 0.2 * randn``;
* ``dt_proj.bias``: ``+= 0.3 * randn``.

Mode 2, ``--check-export DIR``: DIR holds what ``arch/tests/mamba_hf_parity.rs`` writes when
run with ``KILN_WRITE_EXPORT=DIR``: a kiln-exported ``config.json`` + ``model.safetensors`` of a
freshly initialised tiny kiln Mamba, and ``kiln_outputs.safetensors`` (all f32: ``input_ids``
[2, 12] (small integers, exact in f32), ``logits`` [2, 12, vocab] = kiln's forward,
``prompt`` [2, 4] and ``generated`` [2, 6], kiln's greedy continuation through its cache).
Checks that ``AutoModelForCausalLM.from_pretrained(DIR, dtype=float32)`` builds a
``MambaForCausalLM`` with no missing, unexpected or mismatched tensors, that HF's logits on
``input_ids`` are within ``--tol`` (default 1e-4) of kiln's, and that HF's greedy generation from
``prompt`` gives kiln's tokens.  Prints the max abs difference and a JSON summary line; exit
status 0 when everything passes.  The whole round trip:

    KILN_WRITE_EXPORT=/tmp/kiln-mamba-export cargo test --release -p kiln-arch \\
        --test mamba_hf_parity write_export_for_hf_check
    python scripts/make_mamba_fixtures.py --check-export /tmp/kiln-mamba-export

Run (from the repository root; CPU only, a few seconds):

    pip install torch transformers safetensors numpy
    python scripts/make_mamba_fixtures.py            # writes tests/fixtures/mamba-tiny/
    python scripts/make_mamba_fixtures.py --out DIR  # DIR/mamba-tiny/ instead

The committed fixture was made with: Python 3.11.7, torch 2.15.0 (+cu132 wheel, run on CPU),
transformers 5.24.0, safetensors 0.8.0, numpy 2.4.6.  Other torch versions can change the init
(and so every number); compare with tolerances.
"""

import json
import os
import sys

import torch

torch.set_num_threads(1)

import safetensors.torch
from transformers import MambaConfig, MambaForCausalLM

# The Llama fixtures' script, next to this one: shared batch shape, loss, JSON and versions.
from make_fixtures import BATCH, SEED, SEQ, ce_loss, versions, write_json
from ssm_fixtures import (checked_generation, compare_export, grad_norms, perturb, perturbation_doc,
                          reference_batch)
from ssm_fixtures import main as fixture_main

MODEL_KW = dict(
    vocab_size=96,
    hidden_size=32,
    state_size=8,
    expand=2,
    conv_kernel=4,
    time_step_rank=4,
    num_hidden_layers=2,
    tie_word_embeddings=True,
    layer_norm_epsilon=1e-5,
    use_bias=False,
    use_conv_bias=True,
    residual_in_fp32=True,
    use_mambapy=False,
    initializer_range=0.4,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)

# (name suffix, rule, formula) -- applied in named_parameters() order from one generator.
PERTURB = [
    ("norm.weight", "set", 1.0, 0.1),
    ("norm_f.weight", "set", 1.0, 0.1),
    ("mixer.conv1d.bias", "set", 0.0, 0.1),
    ("mixer.D", "set", 1.0, 0.3),
    ("mixer.A_log", "add", None, 0.2),
    ("mixer.dt_proj.bias", "add", None, 0.3),
]


def build_model(seed: int) -> MambaForCausalLM:
    config = MambaConfig(**MODEL_KW)
    torch.manual_seed(seed)
    model = MambaForCausalLM(config).to(torch.float32)
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
    assert "lm_head.weight" not in saved, "tied head was saved"
    assert all(t.dtype == torch.float32 for t in saved.values())

    with torch.no_grad():
        logits, loss = ce_loss(model, input_ids, use_cache=False)
        hf_loss = model(input_ids, labels=input_ids, use_cache=False).loss
    assert abs(hf_loss.item() - loss.item()) < 1e-5 * max(1.0, loss.item()), (hf_loss.item(), loss.item())
    reloaded = MambaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    with torch.no_grad():
        logits2, _ = ce_loss(reloaded, input_ids, use_cache=False)
    assert torch.equal(logits, logits2), "reload changed the logits"
    del reloaded

    grad_norms_ = grad_norms(model, input_ids)
    prompt, generated, gen_logits, cached_vs_full, margin = checked_generation(model, input_ids)

    safetensors.torch.save_file(
        {
            "input_ids": input_ids.contiguous(),
            "logits": logits.contiguous(),
            "gen_logits": gen_logits.float().contiguous(),
        },
        os.path.join(out_dir, "reference.safetensors"),
        metadata={"format": "pt"},
    )
    ref = {
        "description": "HF MambaForCausalLM reference numbers for kiln; made by scripts/make_mamba_fixtures.py",
        "input_ids": input_ids.tolist(),
        "input_ids_shape": list(input_ids.shape),
        "logits": "reference.safetensors:logits, f32 [2, 16, 96], model(input_ids[:, :16], use_cache=False).logits",
        "loss": loss.item(),
        "grad_norms": grad_norms_,
        "generation": {
            "prompt": prompt.tolist(),
            "generated": generated.tolist(),
            "logits": "reference.safetensors:gen_logits, f32 [2, 8, 96], the logits each new token was the argmax of",
            "how": "model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True, eos_token_id=None)",
            "cached_vs_full_forward_max_abs_diff": cached_vs_full,
            "min_top1_top2_logit_margin": margin,
        },
        "hyperparameters": {
            "seed": SEED,
            "model": MODEL_KW,
            "dtype": "float32",
            "perturbations": perturbation_doc(PERTURB),
            "perturbation_generator_seed": SEED + 1,
            "batch": BATCH,
            "seq_len": SEQ,
            "loss": "mean cross-entropy over all batch*seq_len tokens; logits(input_ids[:, :16]) vs input_ids[:, 1:17]",
            "slow_path": "no mamba-ssm / causal-conv1d / kernels: transformers' pure-torch Mamba path",
        },
        "versions": versions(),
    }
    write_json(os.path.join(out_dir, "reference.json"), ref)
    return ref


def check_export(export_dir: str, tol: float) -> int:
    """Loads a kiln export with transformers and compares logits and greedy tokens with kiln's."""
    summary = {"ok": False, "dir": export_dir}
    _, problems, logits, kiln, generated, kiln_generated = compare_export(export_dir, MambaForCausalLM)
    summary["loading_info_problems"] = {k: [str(x) for x in v] for k, v in problems.items()}
    max_diff = (logits - kiln["logits"]).abs().max().item()
    summary["logits_shape"] = list(logits.shape)
    summary["logits_max_abs_diff"] = max_diff
    summary["logits_max_abs"] = logits.abs().max().item()
    summary["generated_equal"] = bool(torch.equal(generated, kiln_generated))
    summary["hf_generated"] = generated.tolist()
    summary["kiln_generated"] = kiln_generated.tolist()

    summary["ok"] = not problems and max_diff < tol and summary["generated_equal"]
    print(f"{export_dir}: max |logits(HF) - logits(kiln)| = {max_diff:.3e} (tol {tol:g}), "
          f"max |logits| = {summary['logits_max_abs']:.3f}, greedy tokens equal: {summary['generated_equal']}"
          + (f", loading problems: {problems}" if problems else ""))
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


def main():
    return fixture_main(__doc__, "mamba-tiny", make_fixture, check_export,
                        "check a kiln Mamba export (see the docstring) instead of writing fixtures")


if __name__ == "__main__":
    sys.exit(main())
