#!/usr/bin/env python3
"""Compares the F32 tensors of two safetensors files (standard library only).

Usage: compare_weights.py A.safetensors B.safetensors [RTOL] [ATOL]

The two files must hold the same tensor names and shapes. Every element must satisfy
torch.allclose's rule |a - b| <= ATOL + RTOL * |b| (defaults 1e-5 and 1e-8, torch's): relative
agreement, with an absolute floor for values that are rounding noise around zero (such as the
gradient-free bias of a BatchNorm followed by another BatchNorm). Prints the largest relative
difference, max |a - b| / max(|b|, ATOL / RTOL), and the worst tensor; exits 1 on any violation.
Used by scripts/mpi-equivalence.sh.
"""
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__" or e["dtype"] != "F32":
            continue
        b, end = e["data_offsets"]
        count = (end - b) // 4
        out[name] = (e["shape"], struct.unpack("<%df" % count, data[base + b : base + end]))
    return out


def main():
    a, b = read(sys.argv[1]), read(sys.argv[2])
    rtol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-5
    atol = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-8
    if sorted(a) != sorted(b):
        print("different tensor names: %s vs %s" % (sorted(a), sorted(b)))
        return 1
    worst, worst_name, violations = 0.0, "", 0
    for name in sorted(a):
        (sa, va), (sb, vb) = a[name], b[name]
        if sa != sb:
            print("%s: shape %s vs %s" % (name, sa, sb))
            return 1
        for x, y in zip(va, vb):
            d = abs(x - y)
            if d > atol + rtol * abs(y):
                violations += 1
            r = d / max(abs(y), atol / rtol)
            if r > worst:
                worst, worst_name = r, name
    ok = violations == 0
    print("largest relative difference %.3g (%s): %s (rtol %g, atol %g)"
          % (worst, worst_name or "-", "ok" if ok else "%d elements outside" % violations, rtol, atol))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
