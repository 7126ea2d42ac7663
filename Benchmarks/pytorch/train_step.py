#!/usr/bin/env python3
"""PyTorch eager twin of acon-bench's train_step workloads: the seed network (conv1..conv4,
ReLU / ACON-C / Meta-ACON-C after conv3, linear1, linear2) at batch 64, one step of forward,
softmax cross-entropy, backward and Adam (lr 1e-3), timed as acon-bench times it: warm-up,
then the median of repeated timings. Prints one JSON object per workload.

Usage: python3 Benchmarks/pytorch/train_step.py [--threads 2] [--repetitions 7] [--compile]
                [--model seed-aconc] [--input 3x32x32]
acon-bench runs it once per train_step workload (one fresh process each, so that the peak memory,
VmHWM, is that workload's) when `python3 -c "import torch"` works, and reports the speed-up. Run
by hand over several workloads, a later row's peak_rss_mb includes the earlier ones'.
"""
import argparse
import json
import resource
import statistics
import sys
import time

import torch
from torch import nn


class AconC(nn.Module):
    """ACON-C as in the paper's reference code: (p1−p2)x·σ(β(p1−p2)x) + p2x."""

    def __init__(self, c):
        super().__init__()
        self.p1 = nn.Parameter(torch.randn(1, c, 1, 1))
        self.p2 = nn.Parameter(torch.randn(1, c, 1, 1))
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x):
        dpx = (self.p1 - self.p2) * x
        return dpx * torch.sigmoid(self.beta * dpx) + self.p2 * x


class MetaAconC(nn.Module):
    """Meta-ACON-C: β = σ(bn2(fc2(bn1(fc1(mean_HW(x)))))), width max(r, C/r), r = 16."""

    def __init__(self, c, r=16):
        super().__init__()
        w = max(r, c // r)
        self.fc1 = nn.Conv2d(c, w, 1)
        self.bn1 = nn.BatchNorm2d(w)
        self.fc2 = nn.Conv2d(w, c, 1)
        self.bn2 = nn.BatchNorm2d(c)
        self.p1 = nn.Parameter(torch.randn(1, c, 1, 1))
        self.p2 = nn.Parameter(torch.randn(1, c, 1, 1))

    def forward(self, x):
        beta = torch.sigmoid(self.bn2(self.fc2(self.bn1(self.fc1(x.mean(dim=(2, 3), keepdim=True))))))
        dpx = (self.p1 - self.p2) * x
        return dpx * torch.sigmoid(beta * dpx) + self.p2 * x


def peak_rss_mb():
    """This process's peak resident memory in MB: VmHWM from /proc/self/status, as acon-bench
    measures its own. (getrusage's ru_maxrss is no good here: Linux carries the parent's
    high-water mark into a spawned child, so a child of a large process reads the parent's peak.)
    Elsewhere (macOS, no /proc) ru_maxrss, in bytes there."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1024)


def seed_net(kind, c, h, w, classes=10):
    act = {"seed-relu": lambda: nn.ReLU(), "seed-aconc": lambda: AconC(64), "seed-meta": lambda: MetaAconC(64)}[kind]
    body = nn.Sequential(
        nn.Conv2d(c, 32, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, 2, 0), nn.ReLU(),
        nn.Conv2d(64, 64, 3, 2, 0), act(),
        nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(),
        nn.Flatten())
    features = body(torch.zeros(2, c, h, w)).shape[1]
    return nn.Sequential(body, nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, classes))


def timed(step, min_seconds, repetitions):
    """Warm-up, steps per repetition so that one lasts min_seconds, the median per step."""
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    step()
    steps = max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    times = []
    for _ in range(repetitions):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def zoo_step(args):
    """A zoo network (zoo_nets.py): one step of forward, softmax cross-entropy, backward and SGD
    (lr 0.01, momentum 0.9), as acon-bench's zoo rows."""
    from zoo_nets import build
    c, h, w = (int(v) for v in args.input.split("x"))
    net = build(args.model, (c, h, w), 10)
    model = torch.compile(net) if args.compile else net
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, c, h, w)
    y = torch.randint(0, 10, (args.batch,))

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()

    med = timed(step, args.min_seconds, args.repetitions)
    print(json.dumps({
        "name": f"pytorch{'.compile' if args.compile else ''}.train_step.{args.model}", "input": args.input,
        "batch": args.batch, "threads": args.threads, "torch": torch.__version__, "median_s": med,
        "images_per_s": args.batch / med, "peak_rss_mb": peak_rss_mb()}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=7)
    ap.add_argument("--min-seconds", type=float, default=0.2, help="least time per timed repetition")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (needs a C++ compiler)")
    ap.add_argument("--model", help="only this network: seed-relu, seed-aconc, seed-meta, or a zoo name "
                    "(zoo_nets.py), e.g. shufflenetv2-0.5x-meta")
    ap.add_argument("--input", help="only this input shape, CxHxW (zoo models need it)")
    ap.add_argument("--batch", type=int, default=64, help="zoo models: the batch size (default 64)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model and not args.model.startswith("seed-"):
        zoo_step(args)
        return
    for c, h, w in [(3, 32, 32), (1, 28, 28)]:
        if args.input and args.input != f"{c}x{h}x{w}":
            continue
        for kind in ["seed-relu", "seed-aconc", "seed-meta"]:
            if args.model and args.model != kind:
                continue
            net = seed_net(kind, c, h, w)
            model = torch.compile(net) if args.compile else net
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            loss_fn = nn.CrossEntropyLoss()
            x = torch.randn(64, c, h, w)
            y = torch.randint(0, 10, (64,))

            def step():
                opt.zero_grad(set_to_none=False)
                loss_fn(model(x), y).backward()
                opt.step()

            for _ in range(10):  # warm-up
                step()
            # Steps per timed repetition, so that one lasts at least min_seconds.
            t0 = time.perf_counter()
            step()
            steps = max(1, int(args.min_seconds / max(time.perf_counter() - t0, 1e-6)))
            times = []
            for _ in range(args.repetitions):
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                times.append((time.perf_counter() - t0) / steps)
            med = statistics.median(times)
            print(json.dumps({
                "name": f"pytorch{'.compile' if args.compile else ''}.train_step.{kind}",
                "input": f"{c}x{h}x{w}", "threads": args.threads, "torch": torch.__version__,
                "median_s": med, "images_per_s": 64 / med,
                "peak_rss_mb": peak_rss_mb()}), flush=True)


if __name__ == "__main__":
    main()
