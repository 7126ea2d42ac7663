#!/usr/bin/env python3
"""PyTorch twin of acon-bench's train_step workloads: the seed network (conv1..conv4,
ReLU / ACON-C / Meta-ACON-C after conv3, linear1, linear2) at batch 64, one step of forward,
softmax cross-entropy, backward and Adam (lr 1e-3), and the zoo's networks (zoo_nets.py) with SGD,
timed as acon-bench times it: warm-up, then the median of repeated timings. Prints one JSON object
per workload.

With --compile the model is torch.compile'd (inductor; the optimizer step stays eager, as
`model = torch.compile(model)` gives a user). The first compiled step compiles the forward and
backward graphs: it is timed on its own (`compile_build_s`), never in the step's figure, and must
finish within --compile-timeout seconds. Its loss is then checked against eager's, and its
parameter gradients against the same step in Double beside eager's (see compiled_and_checked).
A compile that fails, times out or disagrees prints {"name": ..., "error": "..."} and exits with
status 1. The compiled twin's peak_rss_mb is that of its timed steps: the high-water mark is
reset after the compilation and the check, so it counts what stays resident, not their
transient peaks.

Usage: python3 Benchmarks/pytorch/train_step.py [--threads 2] [--repetitions 7] [--compile]
                [--compile-timeout 1200] [--model seed-aconc] [--input 3x32x32]
acon-bench runs it once per train_step workload (one fresh process each, so that the peak memory,
VmHWM, is that workload's) when `python3 -c "import torch"` works, and reports the speed-up. Run
by hand over several workloads, a later row's peak_rss_mb includes the earlier ones'.
"""
import argparse
import copy
import gc
import json
import resource
import signal
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


def timed(step, min_seconds, repetitions, warmup=3):
    """Warm-up, steps per repetition so that one lasts min_seconds, the median per step."""
    for _ in range(warmup):
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


class CompileTimeout(Exception):
    pass


def compiled_and_checked(net, loss_fn, x, y, timeout):
    """torch.compile(net), its first forward + backward (the compilation) timed, and its loss and
    parameter gradients checked against the same step in Double (a copy of net in float64) beside
    eager's: the compiled step must be about as close to it as eager's Float step is. Returns the
    compiled module and the seconds of that first step; raises on failure or after `timeout`."""
    params = [p for p in net.parameters()]

    def gradients(module, inputs):
        module.zero_grad(set_to_none=True)
        value = loss_fn(module(inputs), y)
        value.backward()
        return value.item(), [p.grad.detach().double().clone() for p in module.parameters()]

    exact_loss, exact = gradients(copy.deepcopy(net).double(), x.double())
    eager_loss, eager = gradients(net, x)
    net.zero_grad(set_to_none=True)

    def expired(signum, frame):
        raise CompileTimeout(f"torch.compile's first step did not finish within {timeout:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        t0 = time.perf_counter()
        model = torch.compile(net)
        got_loss = loss_fn(model(x), y)
        got_loss.backward()
        build = time.perf_counter() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    got = [p.grad.detach().double() for p in params]
    if abs(got_loss.item() - eager_loss) > 1e-3 * max(1.0, abs(eager_loss)):
        raise ValueError(f"compiled loss {got_loss.item():.6g} differs from eager's {eager_loss:.6g}")
    # Float rounding moves the gradient of a deep network with BatchNorm by percents (TFNet-0.5's
    # eager Float gradient is 1.7% from the Double one in L2 norm; ResNet18's compiled one 0.34%,
    # its eager one 0.07%): the compiled gradient's distance to the Double one, as a whole and
    # tensor by tensor, may be at most 3 times eager's plus 1% of the whole gradient's norm (a
    # convolution's bias before BatchNorm has an exactly-zero gradient, pure rounding noise on
    # both sides).
    def norm(ts):
        return sum(t.norm().item() ** 2 for t in ts) ** 0.5

    total = norm(exact)
    got_err, eager_err = norm([g - e for g, e in zip(got, exact)]), norm([g - e for g, e in zip(eager, exact)])
    if got_err > 3 * eager_err + 1e-2 * total:
        raise ValueError(f"compiled gradients are {got_err / total:.3g} from Double's in relative L2 norm, "
                         f"eager's {eager_err / total:.3g}")
    names = [n for n, _ in net.named_parameters()]
    for name, g, w, e in zip(names, got, eager, exact):
        if (g - e).norm().item() > 3 * (w - e).norm().item() + 1e-2 * total:
            raise ValueError(f"compiled gradient of {name} is {(g - e).norm().item():.3g} from Double's "
                             f"(L2), eager's {(w - e).norm().item():.3g}")
    net.zero_grad(set_to_none=True)
    return model, build


def reset_peak_rss():
    """Resets this process's VmHWM to its current resident memory (Linux: /proc/self/clear_refs),
    so that the compiled twin's peak_rss_mb is its timed steps', not the compilation's or the
    Double check's."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def run(args, name, net, opt, x, y, input_text, warmup):
    """Times one step (zero_grad, forward, cross-entropy, backward, opt.step) of `net`, or of its
    compiled twin with --compile, and prints the JSON line."""
    loss_fn = nn.CrossEntropyLoss()
    row = {"name": f"pytorch{'.compile' if args.compile else ''}.train_step.{name}", "input": input_text,
           "batch": x.shape[0], "threads": args.threads, "torch": torch.__version__}
    model = net
    if args.compile:
        try:
            model, row["compile_build_s"] = compiled_and_checked(net, loss_fn, x, y, args.compile_timeout)
            reset_peak_rss()
        except Exception as e:  # any failure of the compiler ends this row, with its message
            message = " ".join(f"{type(e).__name__}: {e}".split())
            row["error"] = message[:400]
            print(json.dumps(row), flush=True)
            sys.exit(1)

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()

    med = timed(step, args.min_seconds, args.repetitions, warmup)
    row.update({"median_s": med, "images_per_s": x.shape[0] / med, "peak_rss_mb": peak_rss_mb()})
    print(json.dumps(row), flush=True)


def zoo_step(args):
    """A zoo network (zoo_nets.py): one step of forward, softmax cross-entropy, backward and SGD
    (lr 0.01, momentum 0.9), as acon-bench's zoo rows."""
    from zoo_nets import build
    c, h, w = (int(v) for v in args.input.split("x"))
    net = build(args.model, (c, h, w), 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, c, h, w)
    y = torch.randint(0, 10, (args.batch,))
    run(args, args.model, net, opt, x, y, args.input, warmup=3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=7)
    ap.add_argument("--min-seconds", type=float, default=0.2, help="least time per timed repetition")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (needs a C++ compiler)")
    ap.add_argument("--compile-timeout", type=float, default=1200,
                    help="seconds the first compiled step (the compilation) may take")
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
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            x = torch.randn(64, c, h, w)
            y = torch.randint(0, 10, (64,))
            run(args, kind, net, opt, x, y, f"{c}x{h}x{w}", warmup=10)


if __name__ == "__main__":
    main()
