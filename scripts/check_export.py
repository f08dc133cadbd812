#!/usr/bin/env python3
"""Check that a kiln export directory loads in Hugging Face transformers and matches kiln's numbers.

Usage (from the repository root):

    python scripts/check_export.py --export DIR --kiln-logits FILE.safetensors \
        [--text FILE --kiln-eval-json '{"loss": 3.21}' [--seq-len N]]
    python scripts/check_export.py --self-test tests/fixtures/llama-tiny-untied

Checks, in order:

1. ``AutoModelForCausalLM.from_pretrained(DIR, dtype=float32, attn_implementation="eager")``
   loads with no missing, unexpected or shape-mismatched tensors, and loading changes nothing:
   every tensor of the loaded model's ``state_dict()`` equals the file's tensor of that name bit
   for bit (f32 bit patterns; a bf16 file is compared after its exact widening to f32), and a
   state-dict entry absent from the file is only allowed for a tied head, which must equal the
   embedding bit for bit. This catches load-time init rules that rewrite trained weights (e.g.
   ``rescale_prenorm_residual`` on Mamba), which the logits of a model still near its init miss.
2. ``GenerationConfig.from_pretrained(DIR)`` loads (``generation_config.json`` must exist).
3. ``PreTrainedTokenizerFast(tokenizer_file=DIR/tokenizer.json)`` loads, and its vocabulary
   fits in the model's ``vocab_size``.
4. ``--kiln-logits``: a safetensors file holding ``input_ids`` (int64 or int32, shape [1, n])
   and ``logits`` (f32, [1, n, vocab]) written by kiln.  The HF model is run on those ids; the
   max absolute logits difference must be < ``--logits-tol`` (default 1e-4).
5. ``--text`` (optional, needs ``--kiln-eval-json``): the eval loss as kiln's ``train eval``
   defines it -- tokenize the whole file with the tokenizer, no special tokens added; cut the ids
   into consecutive non-overlapping windows of ``seq_len`` tokens (default: the config's
   ``max_position_embeddings``); keep the last, shorter window if it has >= 2 tokens; each window
   predicts its tokens 1..n-1 from 0..n-2; loss = mean cross-entropy over all predicted tokens of
   all windows (token-weighted, not a mean of window means).  It must match kiln's ``loss``
   within ``--loss-rtol`` (default 1e-4, relative).  ``--kiln-eval-json`` is a JSON string or a
   path to a JSON file with a ``loss`` field.

Exit status 0 when every check passes, 1 otherwise.  The last line printed is a one-line JSON
summary (``{"ok": ..., ...}``).

``--self-test HF_DIR`` copies a valid HF model directory (e.g. one of tests/fixtures/llama-tiny-*)
to a temporary directory, adds a small word-level tokenizer.json, writes kiln-style logits and
eval JSON from HF itself, runs the checks above on it (they must pass), then corrupts the logits
and the loss and checks that both are caught.

Requires: torch, transformers (5.x), safetensors, numpy (see scripts/make_fixtures.py for the
versions used).  CPU only.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

import torch

torch.set_num_threads(1)

import safetensors.torch
import transformers
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast


def load_model(export_dir):
    model, info = AutoModelForCausalLM.from_pretrained(
        export_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    problems = {k: list(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    return model, problems


def bits(t):
    """The f32 bit patterns of a tensor (bf16/f16 widened exactly first)."""
    return t.detach().to(torch.float32).contiguous().view(torch.int32)


def compare_state_dict(model, export_dir):
    """Loaded state dict vs the safetensors file(s), bit for bit. Returns (report, errors)."""
    files = sorted(f for f in os.listdir(export_dir) if f.startswith("model") and f.endswith(".safetensors"))
    stored = {}
    for f in files:
        stored.update(safetensors.torch.load_file(os.path.join(export_dir, f)))
    state = model.state_dict()
    errors, changed = [], []
    for name, t in stored.items():
        if name not in state:
            errors.append(f"{name}: in the file, not in the loaded model")
            continue
        loaded = state[name]
        if list(loaded.shape) != list(t.shape):
            errors.append(f"{name}: shape {list(loaded.shape)} loaded, {list(t.shape)} in the file")
        elif not torch.equal(bits(loaded), bits(t)):
            diff = (loaded.float() - t.float()).abs().max().item()
            changed.append((name, diff))
    for name, diff in changed[:10]:
        errors.append(f"{name}: changed on load (max |loaded - file| = {diff:.3e})")
    if len(changed) > 10:
        errors.append(f"... {len(changed) - 10} more tensors changed on load")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    embed = model.get_input_embeddings().weight
    not_in_file = [n for n in state if n not in stored]
    for name in not_in_file:
        if tied and state[name].data_ptr() == embed.data_ptr() and torch.equal(bits(state[name]), bits(embed)):
            continue
        errors.append(f"{name}: not in the file, so initialized at load")
    report = {"tensors_compared": len(stored), "tensors_changed_on_load": len(changed),
              "state_dict_entries": len(state), "tied_entries": len(not_in_file)}
    return report, errors


def eval_loss(model, ids, seq_len):
    """kiln `train eval` loss over a flat list of token ids. Returns (loss, n_predicted, n_windows)."""
    total, count, windows = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(ids), seq_len):
            w = ids[start : start + seq_len]
            if len(w) < 2:
                continue
            x = torch.tensor([w], dtype=torch.long)
            logits = model(x).logits[0].float()
            nll = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction="sum")
            total += nll.double().item()
            count += len(w) - 1
            windows += 1
    if count == 0:
        raise ValueError("text too short: no window with >= 2 tokens")
    return total / count, count, windows


def check(args):
    summary = {"ok": False, "export": args.export, "transformers": transformers.__version__,
               "torch": torch.__version__, "errors": []}
    errors = summary["errors"]

    # 1. model
    try:
        model, problems = load_model(args.export)
        cfg = model.config
        summary["model_class"] = type(model).__name__
        summary["vocab_size"] = cfg.vocab_size
        summary["tie_word_embeddings"] = bool(getattr(cfg, "tie_word_embeddings", False))
        summary["n_params"] = sum(p.numel() for p in model.parameters())
        if problems:
            errors.append(f"weight loading problems: {problems}")
        report, state_errors = compare_state_dict(model, args.export)
        summary.update(report)
        errors.extend(state_errors)
        print(f"state dict: {report['tensors_compared']} file tensors, "
              f"{report['tensors_changed_on_load']} changed on load, {report['tied_entries']} tied entries")
    except Exception as e:
        traceback.print_exc()
        errors.append(f"model load failed: {e!r}")
        summary["ok"] = False
        print(json.dumps(summary))
        return 1
    print(f"model: {summary['model_class']} vocab {cfg.vocab_size} params {summary['n_params']} "
          f"tied {summary['tie_word_embeddings']} rope_parameters {getattr(cfg, 'rope_parameters', None)}")

    # 2. generation config
    try:
        if not os.path.exists(os.path.join(args.export, "generation_config.json")):
            raise FileNotFoundError("generation_config.json missing")
        gen = GenerationConfig.from_pretrained(args.export)
        summary["generation_config_ok"] = True
        print(f"generation_config: bos {gen.bos_token_id} eos {gen.eos_token_id} pad {gen.pad_token_id}")
    except Exception as e:
        summary["generation_config_ok"] = False
        errors.append(f"generation_config load failed: {e!r}")

    # 3. tokenizer
    tok = None
    try:
        tok_file = os.path.join(args.export, "tokenizer.json")
        if not os.path.exists(tok_file):
            raise FileNotFoundError(f"{tok_file} missing")
        tok = PreTrainedTokenizerFast(tokenizer_file=tok_file)
        summary["tokenizer_vocab"] = len(tok)
        if len(tok) > cfg.vocab_size:
            raise ValueError(f"tokenizer has {len(tok)} tokens > model vocab_size {cfg.vocab_size}")
        summary["tokenizer_ok"] = True
        print(f"tokenizer: {len(tok)} tokens")
    except Exception as e:
        summary["tokenizer_ok"] = False
        errors.append(f"tokenizer load failed: {e!r}")

    # 4. logits
    if args.kiln_logits:
        try:
            t = safetensors.torch.load_file(args.kiln_logits)
            ids, kl = t["input_ids"], t["logits"]
            if ids.dtype == torch.float32:
                # kiln writes ids as f32 (exact for ids < 2**24); accept them when integral.
                if not torch.equal(ids, ids.round()) or ids.max() >= 2**24:
                    raise ValueError("float input_ids are not exact integers")
                ids = ids.to(torch.int64)
            if ids.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"input_ids dtype {ids.dtype}, expected int64, int32 or integral float32")
            if ids.ndim == 1:
                ids = ids[None]
            if ids.ndim != 2 or ids.shape[0] != 1:
                raise ValueError(f"input_ids shape {list(ids.shape)}, expected [1, n]")
            if kl.dtype != torch.float32:
                raise ValueError(f"logits dtype {kl.dtype}, expected float32")
            n = ids.shape[1]
            if list(kl.shape) != [1, n, cfg.vocab_size]:
                raise ValueError(f"logits shape {list(kl.shape)}, expected [1, {n}, {cfg.vocab_size}]")
            with torch.no_grad():
                hl = model(ids.long()).logits.float()
            diff = (hl - kl).abs()
            md = diff.max().item()
            summary["n_logit_tokens"] = n
            summary["logits_max_abs_diff"] = md
            summary["logits_max_abs"] = hl.abs().max().item()
            where = divmod(int(diff.flatten().argmax()), cfg.vocab_size)
            print(f"logits: {n} tokens, max |hf - kiln| = {md:.3e} at (pos {where[0]}, vocab {where[1]}); "
                  f"max |hf| = {summary['logits_max_abs']:.3f}; tol {args.logits_tol:g}")
            if not (md < args.logits_tol):  # also catches NaN
                errors.append(f"logits max abs diff {md:.3e} >= {args.logits_tol:g}")
        except Exception as e:
            traceback.print_exc()
            errors.append(f"logits check failed: {e!r}")

    # 5. eval loss
    if args.text:
        try:
            if tok is None:
                raise RuntimeError("no tokenizer")
            if not args.kiln_eval_json:
                raise ValueError("--text needs --kiln-eval-json")
            src = args.kiln_eval_json
            kiln = json.load(open(src)) if os.path.exists(src) else json.loads(src)
            kiln_loss = float(kiln["loss"])
            with open(args.text, encoding="utf-8") as f:
                text = f.read()
            ids = tok(text, add_special_tokens=False)["input_ids"]
            seq_len = args.seq_len or getattr(cfg, "max_position_embeddings", None)
            if not seq_len:
                raise ValueError("the config has no max_position_embeddings: pass --seq-len")
            hf_loss, n_pred, n_win = eval_loss(model, ids, seq_len)
            rel = abs(hf_loss - kiln_loss) / max(abs(hf_loss), 1e-12)
            summary.update({"text_tokens": len(ids), "seq_len": seq_len, "eval_windows": n_win,
                            "eval_predicted_tokens": n_pred, "hf_loss": hf_loss, "kiln_loss": kiln_loss,
                            "loss_rel_diff": rel})
            print(f"eval: {len(ids)} tokens, {n_win} windows of <= {seq_len}, {n_pred} predicted; "
                  f"hf loss {hf_loss:.6f}  kiln loss {kiln_loss:.6f}  rel diff {rel:.2e} (tol {args.loss_rtol:g})")
            if "tokens" in kiln and int(kiln["tokens"]) not in (n_pred, len(ids)):
                print(f"note: kiln reports tokens={kiln['tokens']}, hf counts {len(ids)} ids / {n_pred} predicted")
            if not (rel < args.loss_rtol):
                errors.append(f"eval loss rel diff {rel:.2e} >= {args.loss_rtol:g}")
        except Exception as e:
            traceback.print_exc()
            errors.append(f"eval check failed: {e!r}")

    summary["ok"] = not errors
    for e in errors:
        print("FAIL:", e)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


def self_test(hf_dir):
    """Exercise the checks on a copy of a valid HF dir, with kiln-side files made by HF itself."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tmp = tempfile.mkdtemp(prefix="kiln_check_export_")
    exp = os.path.join(tmp, "export")
    shutil.copytree(hf_dir, exp)
    model, problems = load_model(exp)
    assert not problems, problems
    V = model.config.vocab_size

    # word-level tokenizer: [UNK] + words w1..w{V-1}
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, V)}}
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.save(os.path.join(exp, "tokenizer.json"))

    g = torch.Generator().manual_seed(0)
    n = 23
    ids = torch.randint(0, V, (1, n), generator=g, dtype=torch.int32)
    with torch.no_grad():
        logits = model(ids.long()).logits.float().contiguous()
    good = os.path.join(tmp, "kiln_logits.safetensors")
    safetensors.torch.save_file({"input_ids": ids, "logits": logits}, good)
    bad = os.path.join(tmp, "kiln_logits_bad.safetensors")
    lb = logits.clone()
    lb[0, 5, 7] += 1e-3
    safetensors.torch.save_file({"input_ids": ids.long(), "logits": lb}, bad)

    # text of 161 tokens: with seq_len 64 -> windows 64, 64, 33 (short last window kept);
    # with seq_len 80 -> windows 80, 80, 1 (1-token tail dropped)
    n_text = 161
    text_ids = torch.randint(1, V, (n_text,), generator=g).tolist()
    text_file = os.path.join(tmp, "eval.txt")
    with open(text_file, "w") as f:
        f.write(" ".join(f"w{i}" for i in text_ids) + "\n")

    def ref_loss(seq_len):
        # independent of eval_loss(): HF's own labels loss per window, weighted by predictions
        tot, cnt = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(text_ids), seq_len):
                w = torch.tensor([text_ids[s : s + seq_len]])
                if w.shape[1] < 2:
                    continue
                tot += model(w, labels=w).loss.item() * (w.shape[1] - 1)
                cnt += w.shape[1] - 1
        return tot / cnt

    default_len = getattr(model.config, "max_position_embeddings", None)
    ref_loss_default = ref_loss(default_len or 64)
    ref_loss_80 = ref_loss(80)

    # export with a tensor missing
    broken = os.path.join(tmp, "export_missing")
    shutil.copytree(exp, broken)
    st = safetensors.torch.load_file(os.path.join(broken, "model.safetensors"))
    final_norm = next(n for n in st if n.endswith(("model.norm.weight", "norm_f.weight", "final_layernorm.weight")))
    del st[final_norm]
    safetensors.torch.save_file(st, os.path.join(broken, "model.safetensors"), metadata={"format": "pt"})

    # an export whose loading rewrites weights: a Mamba config asking for transformers'
    # load-time out_proj rescale
    rescaled = None
    if model.config.model_type in ("mamba", "mamba2"):
        rescaled = os.path.join(tmp, "export_rescaled")
        shutil.copytree(exp, rescaled)
        cfg_path = os.path.join(rescaled, "config.json")
        cfg = json.load(open(cfg_path))
        cfg["rescale_prenorm_residual"] = True
        json.dump(cfg, open(cfg_path, "w"))

    me = [sys.executable, os.path.abspath(__file__), "--export", exp]
    runs = {
        "good": (me + ["--kiln-logits", good, "--text", text_file, "--seq-len", str(default_len or 64),
                       "--kiln-eval-json", json.dumps({"loss": ref_loss_default})], 0),
        "good_seq80": (me + ["--kiln-logits", good, "--text", text_file, "--seq-len", "80",
                             "--kiln-eval-json", json.dumps({"loss": ref_loss_80})], 0),
        "bad_logits": (me + ["--kiln-logits", bad], 1),
        "bad_loss": (me + ["--kiln-logits", good, "--text", text_file, "--seq-len", str(default_len or 64),
                           "--kiln-eval-json", json.dumps({"loss": ref_loss_default * (1 + 3e-4)})], 1),
        "missing_tensor": ([sys.executable, os.path.abspath(__file__), "--export", broken,
                            "--kiln-logits", good], 1),
    }
    if rescaled:
        runs["changed_on_load"] = ([sys.executable, os.path.abspath(__file__), "--export", rescaled], 1)
    ok = True
    for name, (cmd, want) in runs.items():
        r = subprocess.run(cmd, capture_output=True, text=True)
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        print(f"--- self-test {name}: rc {r.returncode} (want {want})\n{r.stdout}{r.stderr if r.returncode != want else ''}")
        ok &= r.returncode == want
    shutil.rmtree(tmp)
    print(json.dumps({"self_test_ok": ok, "hf_dir": hf_dir}))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description="Check a kiln export against transformers.")
    ap.add_argument("--export", help="kiln export directory (config.json, model.safetensors, tokenizer.json, ...)")
    ap.add_argument("--kiln-logits", help="safetensors with input_ids [1, n] and logits [1, n, vocab] from kiln")
    ap.add_argument("--text", help="text file for the eval-loss comparison")
    ap.add_argument("--kiln-eval-json", help='kiln eval result: JSON string or file, e.g. \'{"loss": 3.21}\'')
    ap.add_argument("--seq-len", type=int, default=None, help="eval window (default: max_position_embeddings)")
    ap.add_argument("--logits-tol", type=float, default=1e-4)
    ap.add_argument("--loss-rtol", type=float, default=1e-4)
    ap.add_argument("--self-test", metavar="HF_DIR", help="self-test the checker on a valid HF model dir")
    args = ap.parse_args()
    if args.self_test:
        return self_test(args.self_test)
    if not args.export:
        ap.error("--export is required")
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
