#!/usr/bin/env python3
"""Writes seed-aconc and seed-meta checkpoints the way a PyTorch user would (a plain state_dict
saved with the `safetensors` package, no model metadata), plus for each an input batch and the
logits that the network gives for it in eval mode, computed here by definition in float64 numpy:

    seed_checkpoint.py OUTDIR  ->  OUTDIR/seed-aconc.safetensors   (state_dict, metadata {"format": "pt"})
                                   OUTDIR/io.safetensors           ("input" [2, 1, 8, 8], "logits" [2, 3])
                                   OUTDIR/seed-meta.safetensors    (state_dict, metadata {"format": "pt"})
                                   OUTDIR/io-meta.safetensors      ("input" [2, 1, 16, 16], "beta" [2, 64],
                                                                    "logits" [2, 3])

Networks (3 classes): conv1 3x3/1 p1 -> relu -> conv2 3x3/2 -> relu -> conv3 3x3/2 -> act
-> conv4 3x3/2 p1 -> relu -> flatten -> linear1 -> relu -> linear2, where act is ACON-C
(input 1x8x8) or Meta-ACON-C (input 1x16x16, so that its mean runs over 3x3 pixels): with
W = max(16, 64/16) = 16, beta = sigmoid(bn2(fc2(bn1(fc1(mean_HW(x)))))), fc1 a 1x1 conv 64 -> 16 and
fc2 16 -> 64 (both with bias), the BatchNorms in eval mode (running statistics, eps 1e-5), one
beta per sample and channel. The BatchNorms' num_batches_tracked are I64 scalars (shape []).
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


def batch_norm_eval(x, sd, prefix, eps=1e-5):
    """BatchNorm2d in eval mode over the channels of [N, C, H, W]."""
    c = lambda name: sd[prefix + name].reshape(1, -1, 1, 1)
    return (x - c("running_mean")) / np.sqrt(c("running_var") + eps) * c("weight") + c("bias")


def meta_acon_c(x, p, prefix):
    """Meta-ACON-C with BatchNorm, eval mode; returns the output and beta [N, C]."""
    m = x.mean(axis=(2, 3), keepdims=True)
    h = batch_norm_eval(conv2d(m, p[prefix + "fc1.weight"], p[prefix + "fc1.bias"], 1, 0), p, prefix + "bn1.")
    h = batch_norm_eval(conv2d(h, p[prefix + "fc2.weight"], p[prefix + "fc2.bias"], 1, 0), p, prefix + "bn2.")
    beta = 1 / (1 + np.exp(-h))
    return acon_c(x, p[prefix + "p1"], p[prefix + "p2"], beta), beta.reshape(beta.shape[0], -1)


def batch_norm_state(rng, prefix, channels, tracked):
    f32 = np.float32
    return {
        prefix + "weight": rng.uniform(0.5, 1.5, (channels,)).astype(f32),
        prefix + "bias": rng.uniform(-0.3, 0.3, (channels,)).astype(f32),
        prefix + "running_mean": rng.normal(scale=0.2, size=(channels,)).astype(f32),
        prefix + "running_var": rng.uniform(0.05, 0.5, (channels,)).astype(f32),
        prefix + "num_batches_tracked": np.array(tracked, dtype=np.int64),
    }


def convs_before_acon(rng):
    """conv1 to conv3 of the seed network on 1-channel input, drawn in state_dict order."""
    f32 = np.float32
    return {
        "conv1.weight": rng.uniform(-0.3, 0.3, (32, 1, 3, 3)).astype(f32),
        "conv1.bias": rng.uniform(-0.1, 0.1, (32,)).astype(f32),
        "conv2.weight": rng.uniform(-0.06, 0.06, (64, 32, 3, 3)).astype(f32),
        "conv2.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
        "conv3.weight": rng.uniform(-0.04, 0.04, (64, 64, 3, 3)).astype(f32),
        "conv3.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
    }


def layers_after_acon(rng, features, linear1_bound, linear2_bound):
    """conv4, linear1 (features → 64) and linear2 (64 → 3 classes), drawn in state_dict order."""
    f32 = np.float32
    return {
        "conv4.weight": rng.uniform(-0.04, 0.04, (64, 64, 3, 3)).astype(f32),
        "conv4.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
        "linear1.weight": rng.uniform(-linear1_bound, linear1_bound, (64, features)).astype(f32),
        "linear1.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
        "linear2.weight": rng.uniform(-linear2_bound, linear2_bound, (3, 64)).astype(f32),
        "linear2.bias": rng.uniform(-0.1, 0.1, (3,)).astype(f32),
    }


def seed_forward(x, p, activation):
    """The seed network in float64, with `activation` (conv3's output → its output) as acon1."""
    h = np.maximum(conv2d(x.astype(np.float64), p["conv1.weight"], p["conv1.bias"], 1, 1), 0)
    h = np.maximum(conv2d(h, p["conv2.weight"], p["conv2.bias"], 2, 0), 0)
    h = activation(conv2d(h, p["conv3.weight"], p["conv3.bias"], 2, 0))
    h = np.maximum(conv2d(h, p["conv4.weight"], p["conv4.bias"], 2, 1), 0)
    h = h.reshape(h.shape[0], -1)
    h = np.maximum(h @ p["linear1.weight"].T + p["linear1.bias"], 0)
    return h @ p["linear2.weight"].T + p["linear2.bias"]


def write_meta(outdir):
    rng = np.random.default_rng(5678)
    f32 = np.float32
    sd = convs_before_acon(rng)
    sd.update({
        "acon1.fc1.weight": rng.uniform(-0.5, 0.5, (16, 64, 1, 1)).astype(f32),
        "acon1.fc1.bias": rng.uniform(-0.1, 0.1, (16,)).astype(f32),
        **batch_norm_state(rng, "acon1.bn1.", 16, 1234),
        "acon1.fc2.weight": rng.uniform(-0.25, 0.25, (64, 16, 1, 1)).astype(f32),
        "acon1.fc2.bias": rng.uniform(-0.1, 0.1, (64,)).astype(f32),
        **batch_norm_state(rng, "acon1.bn2.", 64, 5678),
        "acon1.p1": rng.normal(size=(1, 64, 1, 1)).astype(f32),
        "acon1.p2": rng.normal(size=(1, 64, 1, 1)).astype(f32),
    })
    sd.update(layers_after_acon(rng, 256, 0.2, 0.5))
    x = rng.normal(size=(2, 1, 16, 16)).astype(f32)
    p = {k: v.astype(np.float64) for k, v in sd.items()}
    betas = []

    def activation(h):
        out, beta = meta_acon_c(h, p, "acon1.")
        betas.append(beta)
        return out

    logits = seed_forward(x, p, activation)
    save_file(sd, os.path.join(outdir, "seed-meta.safetensors"), metadata={"format": "pt"})
    save_file({"input": x, "beta": betas[0].astype(f32), "logits": logits.astype(f32)},
              os.path.join(outdir, "io-meta.safetensors"))


def main(outdir):
    rng = np.random.default_rng(1234)
    f32 = np.float32
    sd = convs_before_acon(rng)
    sd.update({
        "acon1.p1": rng.normal(size=(1, 64, 1, 1)).astype(f32),
        "acon1.p2": rng.normal(size=(1, 64, 1, 1)).astype(f32),
        "acon1.beta": rng.uniform(0.5, 1.5, (1, 64, 1, 1)).astype(f32),
    })
    sd.update(layers_after_acon(rng, 64, 0.12, 0.12))
    x = rng.normal(size=(2, 1, 8, 8)).astype(f32)
    p = {k: v.astype(np.float64) for k, v in sd.items()}
    logits = seed_forward(x, p, lambda h: acon_c(h, p["acon1.p1"], p["acon1.p2"], p["acon1.beta"]))
    save_file(sd, os.path.join(outdir, "seed-aconc.safetensors"), metadata={"format": "pt"})
    save_file({"input": x, "logits": logits.astype(f32)}, os.path.join(outdir, "io.safetensors"))
    write_meta(outdir)


if __name__ == "__main__":
    main(sys.argv[1])
