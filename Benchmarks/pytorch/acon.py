#!/usr/bin/env python3
"""PyTorch twin of acon-bench's ACON rows: ACON-C or Meta-ACON-C (the modules of train_step.py,
as in the paper's acon.py) forward + backward on one [N, C, H, W] shape, in eager mode and under
torch.compile, timed as acon-bench times its own: warm-up, then the median of repeated timings,
each long enough to time. Forward+backward is y = layer(x), then the gradients of x and of every
parameter for an upstream gradient dy (torch.autograd.grad: no accumulation into .grad), as
acon-bench's fused rows compute dx and the parameter gradients. Meta-ACON-C runs in training
mode (BatchNorm on batch statistics), as acon-bench's does.

The compiled module is checked against eager (y and every gradient) before it is timed; a
mismatch or any error exits non-zero. Prints one JSON object:
  {"layer": ..., "shape": [...], "threads": T, "torch": "...", "eager_s": s, "compile_s": s,
   "compile_build_s": s}
Usage: python3 Benchmarks/pytorch/acon.py --layer aconc --shape 64x64x56x56 [--threads 2]
                [--repetitions 7] [--min-seconds 0.05] [--no-compile]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import AconC, MetaAconC  # noqa: E402  (the same modules as the train-step twin)


def measure(step, repetitions, min_seconds):
    """Warm-up, an inner count so that one repetition lasts min_seconds, the median per call."""
    for _ in range(3):
        step()
    inner = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        t = time.perf_counter() - t0
        if t >= min_seconds or inner >= 1 << 20:
            break
        inner = max(inner * 2, int(inner * min_seconds / max(t, 1e-9) * 1.2))
    times = []
    for _ in range(repetitions):
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", choices=["aconc", "metaaconc"], required=True)
    ap.add_argument("--shape", required=True, help="N x C x H x W, e.g. 64x64x56x56")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=7)
    ap.add_argument("--min-seconds", type=float, default=0.05, help="least time per timed repetition")
    ap.add_argument("--no-compile", action="store_true", help="eager only")
    args = ap.parse_args()
    n, c, h, w = (int(v) for v in args.shape.split("x"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = (AconC(c) if args.layer == "aconc" else MetaAconC(c)).train()
    x = torch.randn(n, c, h, w, requires_grad=True)
    dy = torch.randn(n, c, h, w)
    inputs = [x] + list(layer.parameters())

    def step_of(module):
        def step():
            y = module(x)
            return (y,) + torch.autograd.grad(y, inputs, dy)
        return step

    eager = step_of(layer)
    result = {"layer": args.layer, "shape": [n, c, h, w], "threads": args.threads, "torch": torch.__version__,
              "eager_s": measure(eager, args.repetitions, args.min_seconds)}
    if not args.no_compile:
        compiled = torch.compile(layer, dynamic=False)
        t0 = time.perf_counter()
        got = step_of(compiled)()  # compiles the forward and the backward graph
        result["compile_build_s"] = time.perf_counter() - t0
        want = eager()
        names = ["y", "x"] + [name for name, _ in layer.named_parameters()]
        # Parameter gradients are sums over N·H·W terms: an absolute tolerance on the scale of
        # the largest of them (fc1.bias's is exactly 0, BatchNorm following it, and comes out as
        # rounding noise of that scale).
        grad_scale = max(b.abs().max().item() for b in want[2:])
        for i, (name, a, b) in enumerate(zip(names, got, want)):
            scale = max(1.0, b.abs().max().item() if i < 2 else grad_scale)
            if not torch.allclose(a, b, rtol=1e-3, atol=1e-4 * scale):
                err = (a - b).abs().max().item()
                sys.exit(f"acon.py: torch.compile's {args.layer} {name} differs from eager's (max error {err:.3g})")
        result["compile_s"] = measure(step_of(compiled), args.repetitions, args.min_seconds)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
