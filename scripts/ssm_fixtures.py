"""What ``make_mamba_fixtures.py``, ``make_mamba2_fixtures.py`` and ``make_jamba_fixtures.py`` share:
the perturbed tiny model, the reference batch, gradient norms, greedy generation (by ``generate``
and by hand through the cache) with its checks, the comparison of a kiln export, and ``main``.

Not a script: imported by those three (Python puts a script's own directory, ``scripts/``, on the path).
"""

import argparse
import os

import torch

import safetensors.torch
from transformers import AutoModelForCausalLM

from make_fixtures import BATCH, SEED, SEQ, ce_loss

PROMPT, NEW_TOKENS = 5, 8


def perturb(model, rules, seed):
    """Moves parameters off their init values, in ``named_parameters()`` order from one generator
    seeded ``seed``: for the first rule ``(suffix, rule, base, scale)`` whose suffix ends the name,
    ``set`` writes ``base + scale * randn``, ``add`` adds ``scale * randn``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            for suffix, rule, base, scale in rules:
                if name.endswith(suffix):
                    noise = scale * torch.randn(p.shape, generator=g)
                    p.copy_(base + noise if rule == "set" else p + noise)
                    break


def perturbation_doc(rules):
    """The rules as ``reference.json`` records them."""
    return [
        {"suffix": s, "rule": (f"{b} + {sc} * randn" if r == "set" else f"+= {sc} * randn")}
        for s, r, b, sc in rules
    ]


def reference_batch(vocab_size):
    """The ``[BATCH, SEQ + 1]`` token ids every fixture uses (generator seeded ``SEED``)."""
    g = torch.Generator().manual_seed(SEED)
    return torch.randint(0, vocab_size, (BATCH, SEQ + 1), generator=g, dtype=torch.int64)


def grad_norms(model, input_ids):
    """The L2 norm of each parameter's gradient of the loss, by name (gradients cleared after)."""
    model.zero_grad(set_to_none=True)
    _, loss = ce_loss(model, input_ids, use_cache=False)
    loss.backward()
    norms = {n: p.grad.norm().item() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return norms


def greedy(model, prompt, new_tokens):
    """HF generate, greedy, no EOS: exactly `new_tokens` tokens. Returns (tokens, step logits)."""
    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[:, prompt.shape[1] :]
    assert tokens.shape[1] == new_tokens, tokens.shape
    return tokens, torch.stack(out.logits, dim=1)


def greedy_by_hand(model, prompt, new_tokens):
    """The same through the cache by hand: prompt once, then one token per call."""
    out = model(prompt, use_cache=True)
    cache, tokens = out.cache, []
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(new_tokens):
        tokens.append(nxt)
        out = model(nxt, cache=cache, use_cache=True)
        cache = out.cache
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    return torch.cat(tokens, dim=1)


def checked_generation(model, input_ids):
    """Greedy generation of ``NEW_TOKENS`` after the first ``PROMPT`` ids, checked three ways:
    ``generate`` and the cache by hand pick the same tokens, the cached step logits equal a full
    forward's (1e-4), and no choice is within 1e-2 of a tie. Returns ``(prompt, generated,
    gen_logits, cached_vs_full, margin)``."""
    prompt = input_ids[:, :PROMPT].contiguous()
    with torch.no_grad():
        generated, gen_logits = greedy(model, prompt, NEW_TOKENS)
        by_hand = greedy_by_hand(model, prompt, NEW_TOKENS)
        # The cached steps agree with a full forward on prompt + generated tokens.
        full = model(torch.cat([prompt, generated], 1), use_cache=False).logits
    assert torch.equal(generated, by_hand), (generated, by_hand)
    cached_vs_full = (full[:, PROMPT - 1 : PROMPT - 1 + NEW_TOKENS] - gen_logits).abs().max().item()
    assert cached_vs_full < 1e-4, cached_vs_full
    top2 = gen_logits.topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]).min().item()
    assert margin > 1e-2, f"greedy choice too close to a tie: {margin}"
    return prompt, generated, gen_logits, cached_vs_full, margin


def compare_export(export_dir, model_class):
    """Loads a kiln export with transformers (it must load as ``model_class``) and runs it on
    ``kiln_outputs.safetensors``' inputs. Returns ``(model, loading problems, HF logits, kiln
    outputs, HF greedy tokens, kiln greedy tokens)``."""
    model, info = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32, output_loading_info=True)
    model.eval()
    problems = {k: v for k, v in info.items() if v}
    assert isinstance(model, model_class), type(model).__name__
    kiln = safetensors.torch.load_file(os.path.join(export_dir, "kiln_outputs.safetensors"))
    input_ids = kiln["input_ids"].round().long()
    assert torch.equal(input_ids.float(), kiln["input_ids"]), "input_ids are not integers"
    with torch.no_grad():
        logits = model(input_ids, use_cache=False).logits
    assert logits.shape == kiln["logits"].shape, (logits.shape, kiln["logits"].shape)
    prompt = kiln["prompt"].round().long()
    with torch.no_grad():
        generated, _ = greedy(model, prompt, kiln["generated"].shape[1])
    return model, problems, logits, kiln, generated, kiln["generated"].round().long()


def main(doc, fixture_name, make_fixture, check_export=None, check_help=None, size_limit=300_000):
    """The scripts' command line: writes ``OUT/fixture_name/`` with ``make_fixture(dir)``, or,
    given ``--check-export DIR``, returns ``check_export(DIR, tol)``."""
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"),
                    help=f"fixtures root; the fixture goes to OUT/{fixture_name}/")
    if check_export is not None:
        ap.add_argument("--check-export", metavar="DIR", help=check_help)
        ap.add_argument("--tol", type=float, default=1e-4, help="--check-export logits tolerance (abs)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)

    if check_export is not None and args.check_export:
        return check_export(args.check_export, args.tol)

    d = os.path.normpath(os.path.join(args.out, fixture_name))
    ref = make_fixture(d)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{d}: {size} bytes, loss {ref['loss']:.6f}, generated {ref['generation']['generated']}, "
          f"cached vs full {ref['generation']['cached_vs_full_forward_max_abs_diff']:.2e}")
    assert size < size_limit, f"{d} is {size} bytes"
    return 0
