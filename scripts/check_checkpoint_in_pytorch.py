#!/usr/bin/env python3
"""Checks that a model file written by `acon-train` (train --checkpoint) loads strictly into the
PyTorch twin of its zoo network and gives the same eval-mode logits. Runs where torch and
safetensors are installed; the Swift tests never need it.

    python3 scripts/check_checkpoint_in_pytorch.py CHECKPOINT.safetensors \
        [--acon-train .build/release/acon-train] [--model NAME] [--batch 4] [--seed 0] [--tolerance 1e-4]

It reads the file's tensors and metadata (`model`, `input`, `classes`; --model when the file
names none), builds the twin (Benchmarks/pytorch/zoo_nets.py, official state_dict names) and
calls load_state_dict(strict=True). It then draws a fixed batch N(0, 1) of the recorded input
shape, has `acon-train predict --input-tensor IN --logits-out OUT` compute the logits in
evaluation mode, computes the twin's in float64 (eval mode, the same float32 weights) and prints
the largest difference relative to the largest |logit|. Exit status 1 when the state dict does
not load strictly, the shapes differ, or that relative difference exceeds --tolerance.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "Benchmarks", "pytorch"))
import zoo_nets  # noqa: E402  (the twins; needs the path above)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--acon-train", default=os.path.join(ROOT, ".build", "release", "acon-train"))
    ap.add_argument("--model", help="the zoo model, when the file's metadata names none")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    with safe_open(args.checkpoint, "pt") as f:
        meta = f.metadata() or {}
    name = meta.get("model") or args.model
    if not name:
        sys.exit(f"{args.checkpoint}: its metadata names no model; pass --model")
    if args.model and args.model != name:
        sys.exit(f"{args.checkpoint}: the file is a {name}, not a {args.model}")
    shape = tuple(int(d) for d in meta.get("input", "3x224x224").split("x"))
    classes = int(meta.get("classes", "1000"))

    state = load_file(args.checkpoint)
    twin = zoo_nets.build(name, shape, classes)
    try:
        twin.load_state_dict(state, strict=True)
    except RuntimeError as e:
        print(f"FAIL {name}: the state dict does not load strictly into the twin:\n{e}")
        return 1
    twin.eval()

    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn((args.batch,) + shape, generator=gen, dtype=torch.float32)
    with torch.no_grad():
        want = twin.double()(x.double())

    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "input.safetensors"), os.path.join(tmp, "logits.safetensors")
        save_file({"input": x.contiguous()}, inp)
        run = subprocess.run([args.acon_train, "predict", "--checkpoint", args.checkpoint,
                              "--input-tensor", inp, "--logits-out", out], capture_output=True, text=True)
        if run.returncode != 0:
            print(f"FAIL {name}: acon-train predict exited with {run.returncode}:\n{run.stderr}")
            return 1
        got = load_file(out)["logits"].double()

    if got.shape != want.shape:
        print(f"FAIL {name}: acon-train gave logits of shape {list(got.shape)}, the twin {list(want.shape)}")
        return 1
    scale = want.abs().max().item()
    rel = (got - want).abs().max().item() / scale
    ok = rel <= args.tolerance
    print(json.dumps({"model": name, "input": list(shape), "classes": classes, "keys": len(state),
                      "strict_load": True, "batch": args.batch, "max_abs_logit": scale,
                      "max_relative_difference": rel, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
