#!/usr/bin/env python3
"""Converts an official ACON checkpoint (a PyTorch pickle, .pth or .pth.tar, from GitHub
nmaac/acon) into a safetensors file that `acon-train` and the Zoo module load strictly.

The pickle is read with torch.load(weights_only=True): PyTorch's restricted unpickler, which
rebuilds tensors and plain containers and refuses arbitrary objects, so no code in the file runs.
The official files are {'state_dict': ...} (sometimes with more entries, such as an epoch or an
optimizer); the state dict is taken from 'state_dict' (or 'model'), or the file itself when it is
one. nn.DataParallel's `module.` prefix is removed from every key that has it. Tensors are written
contiguous, in their own dtype (float32 weights; num_batches_tracked int64).

Usage:
    python3 scripts/convert_official.py ShuffleNetV2_ACON_0.5x.pth.tar shufflenetv2-0.5x-aconc.safetensors \
        [--model shufflenetv2-0.5x-aconc] [--input 3x224x224] [--classes 1000]

--model, --input and --classes go into the file's metadata (what acon-train's checkpoints carry),
so `acon-train evaluate --checkpoint FILE` knows what to build; without them only the tensors are
written. Needs torch and safetensors (pip install torch safetensors).
"""
import argparse
import sys

import torch
from safetensors.torch import save_file

PREFIX = "module."


def state_dict_of(obj, path):
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    sys.exit(f"{path}: no state dict found (expected {{'state_dict': {{name: tensor}}}} or {{name: tensor}})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="the official .pth / .pth.tar file")
    ap.add_argument("output", help="the safetensors file to write")
    ap.add_argument("--model", help="the zoo name, e.g. shufflenetv2-0.5x-aconc (written into the metadata)")
    ap.add_argument("--input", default="3x224x224", help="CxHxW of the network's input (metadata; default 3x224x224)")
    ap.add_argument("--classes", type=int, default=1000, help="classes of the last layer (metadata; default 1000)")
    args = ap.parse_args()

    try:
        obj = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a bad or unsafe file
        sys.exit(f"{args.checkpoint}: cannot be read with torch.load(weights_only=True): {e}")
    state = state_dict_of(obj, args.checkpoint)
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            sys.exit(f"{args.checkpoint}: entry {key!r} is a {type(value).__name__}, not a tensor")
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if name in out:
            sys.exit(f"{args.checkpoint}: {key!r} and another key both become {name!r} without the {PREFIX!r} prefix")
        out[name] = value.detach().contiguous()
    metadata = {"format": "pt", "keys_in_order": ",".join(out)}
    if args.model:
        c, h, w = (int(v) for v in args.input.lower().split("x"))
        metadata.update({"model": args.model, "input": f"{c}x{h}x{w}", "classes": str(args.classes)})
    save_file(out, args.output, metadata=metadata)
    print(f"{args.output}: {len(out)} tensors, {sum(t.numel() for t in out.values() if t.is_floating_point()):,} "
          f"floating-point values")


if __name__ == "__main__":
    main()
