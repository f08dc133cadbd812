#!/usr/bin/env python3
"""PyTorch reference side of `scripts/bench`: trains transformers' LlamaForCausalLM, built from a
kiln-written `config.json`, for a few steps on random tokens and prints one JSON line.

The step is the one kiln runs: forward, cross-entropy over every position, backward, global-norm
clipping at 1.0, torch.optim.AdamW (same lr / betas / eps / weight decay as the recipe).

    python scripts/bench_torch.py --config CONFIG.json --batch 32 --seq 128 --steps 8 --threads 2
    python scripts/bench_torch.py ... --device cuda --precision bf16-mixed --compile --attn sdpa

Needs `pip install torch transformers`. Timing: `--warmup` steps first (compilation, allocator),
then the median of `--steps` steps, each ended by a device sync.
"""
import argparse
import json
import resource
import statistics
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True, help="HF config.json (as kiln exports it)")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16-mixed", "bf16"])
    p.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.1)
    args = p.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    with open(args.config) as f:
        raw = json.load(f)
    cfg = LlamaConfig(**{k: v for k, v in raw.items() if not k.startswith("kiln_")})
    cfg._attn_implementation = args.attn
    model = LlamaForCausalLM(cfg).to(dev)
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
        # The fused/foreach kernels are what a PyTorch user gets by default on each device.
    )
    vocab = cfg.vocab_size

    def loss_fn(ids):
        logits = model(input_ids=ids[:, :-1]).logits
        return torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, vocab), ids[:, 1:].reshape(-1))

    fwd_bwd = torch.compile(loss_fn) if args.compile else loss_fn
    autocast = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
                if args.precision == "bf16-mixed" else None)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(ids):
        if autocast is not None:
            with autocast:
                loss = fwd_bwd(ids)
        else:
            loss = fwd_bwd(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    gen = torch.Generator().manual_seed(0)
    times, loss = [], None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=gen).to(dev)
        sync()
        t0 = time.perf_counter()
        loss = step(ids)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    if dev.type == "cuda":
        # Reserved, not allocated: what kiln reports too (the allocator pool held on the device).
        peak_mb = torch.cuda.max_memory_reserved() / 2**20
        mem_kind = "device"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mem_kind = "rss"
    out = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "step_s": step_s,
        "best_step_s": min(times),
        "tokens_per_s": args.batch * args.seq / step_s,
        "peak_mem_mb": peak_mb,
        "mem_kind": mem_kind,
        "loss": float(loss.item()),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
