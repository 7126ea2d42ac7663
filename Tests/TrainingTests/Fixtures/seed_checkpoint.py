#!/usr/bin/env python3
"""Writes a seed-aconc checkpoint the way a PyTorch user would (a plain state_dict saved with the
`safetensors` package, no model metadata), plus an input batch and the logits that the network
gives for it, computed here by definition in float64 numpy:

    seed_checkpoint.py OUTDIR  ->  OUTDIR/seed-aconc.safetensors   (state_dict, metadata {"format": "pt"})
                                   OUTDIR/io.safetensors           ("input" [2, 1, 8, 8], "logits" [2, 3])

Network (input 1x8x8, 3 classes): conv1 3x3/1 p1 -> relu -> conv2 3x3/2 -> relu -> conv3 3x3/2
-> ACON-C -> conv4 3x3/2 p1 -> relu -> flatten -> linear1 -> relu -> linear2.
Needs numpy and safetensors; exits 3 when they are missing.
"""
import os
import sys

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError as e:
    print(f"missing Python package: {e}", file=sys.stderr)
    sys.exit(3)


def conv2d(x, w, b, stride, pad):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            y[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    return y


def acon_c(x, p1, p2, beta):
    d = (p1 - p2) * x
    return d / (1 + np.exp(-beta * d)) + p2 * x


def main(outdir):
    rng = np.random.default_rng(1234)
    f32 = np.float32
    sd = {
        "conv1.weight": rng.uniform(-0.3, 0.3, (32, 1, 3, 3)).astype(f32),
        "conv1.bias": rng.uniform(-0.1, 0.1, (32,)).astype(f32),
        "conv2.weight": rng.uniform(-0.06, 0.06, (64, 32, 3, 3)).astype(f32),
        "conv2.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
        "conv3.weight": rng.uniform(-0.04, 0.04, (64, 64, 3, 3)).astype(f32),
        "conv3.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
        "acon1.p1": rng.normal(size=(1, 64, 1, 1)).astype(f32),
        "acon1.p2": rng.normal(size=(1, 64, 1, 1)).astype(f32),
        "acon1.beta": rng.uniform(0.5, 1.5, (1, 64, 1, 1)).astype(f32),
        "conv4.weight": rng.uniform(-0.04, 0.04, (64, 64, 3, 3)).astype(f32),
        "conv4.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
        "linear1.weight": rng.uniform(-0.12, 0.12, (64, 64)).astype(f32),
        "linear1.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
        "linear2.weight": rng.uniform(-0.12, 0.12, (3, 64)).astype(f32),
        "linear2.bias": rng.uniform(-0.1, 0.1, (3,)).astype(f32),
    }
    x = rng.normal(size=(2, 1, 8, 8)).astype(f32)
    p = {k: v.astype(np.float64) for k, v in sd.items()}
    h = np.maximum(conv2d(x.astype(np.float64), p["conv1.weight"], p["conv1.bias"], 1, 1), 0)
    h = np.maximum(conv2d(h, p["conv2.weight"], p["conv2.bias"], 2, 0), 0)
    h = acon_c(conv2d(h, p["conv3.weight"], p["conv3.bias"], 2, 0), p["acon1.p1"], p["acon1.p2"], p["acon1.beta"])
    h = np.maximum(conv2d(h, p["conv4.weight"], p["conv4.bias"], 2, 1), 0)
    h = h.reshape(h.shape[0], -1)
    h = np.maximum(h @ p["linear1.weight"].T + p["linear1.bias"], 0)
    logits = h @ p["linear2.weight"].T + p["linear2.bias"]
    save_file(sd, os.path.join(outdir, "seed-aconc.safetensors"), metadata={"format": "pt"})
    save_file({"input": x, "logits": logits.astype(f32)}, os.path.join(outdir, "io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
