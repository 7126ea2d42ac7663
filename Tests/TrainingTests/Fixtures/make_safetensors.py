#!/usr/bin/env python3
"""Fixtures for the Swift safetensors reader, written with the reference `safetensors` package.

    make_safetensors.py OUTDIR     writes OUTDIR/basic.safetensors (F32 and I64 only, one metadata key,
                                   so our writer must reproduce it byte for byte) and
                                   OUTDIR/mixed.safetensors (F16, F64, I32, U8, BOOL; two metadata keys)
    make_safetensors.py --dump F   prints F as JSON: {"metadata": {...}, "tensors": {name: {dtype, shape, values}}}

Needs `numpy` and `safetensors` (pip install safetensors numpy). Exits 3 if they are missing.
"""
import json
import os
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
except ImportError as e:  # the Swift test skips on this
    print(f"missing Python package: {e}", file=sys.stderr)
    sys.exit(3)


def write(outdir):
    basic = {
        "conv.weight": (np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) * 0.5 - 1.0),
        "conv.bias": np.array([0.25, -0.75], dtype=np.float32),
        "bn.running_var": np.array([1.5, 2.5], dtype=np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "steps": np.array([-3, 0, 2**40], dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    save_file(basic, os.path.join(outdir, "basic.safetensors"), metadata={"format": "pt"})
    mixed = {
        "half": np.array([1.0, -2.5, 65504.0, 0.0001], dtype=np.float16),
        "double": np.array([[1.0, 2.0], [3.0, -0.125]], dtype=np.float64),
        "int32": np.array([-2147483648, 5, 2147483647], dtype=np.int32),
        "bytes": np.array([0, 255, 7], dtype=np.uint8),
        "flags": np.array([True, False, True], dtype=np.bool_),
    }
    save_file(mixed, os.path.join(outdir, "mixed.safetensors"), metadata={"format": "np", "source": "fixture"})


def dump(path):
    with safe_open(path, framework="np") as f:
        metadata = f.metadata() or {}
    tensors = {}
    for name, a in load_file(path).items():
        tensors[name] = {"dtype": str(a.dtype), "shape": list(a.shape), "values": a.reshape(-1).tolist()}
    print(json.dumps({"metadata": metadata, "tensors": tensors}, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dump":
        dump(sys.argv[2])
    elif len(sys.argv) == 2:
        write(sys.argv[1])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
