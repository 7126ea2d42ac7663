#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into Fuzz/Corpus (valid and nearly valid files).

Run from anywhere: python3 Fuzz/make_corpus.py. Standard library only. The files are checked in;
rerun this only to change them.
"""
import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def out(kind, name, data):
    d = os.path.join(HERE, "Corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def idx(type_code, dims, payload):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def pair(images, labels):
    """fuzz-idx input: 2-byte big-endian length of the images file, the images, the labels."""
    return struct.pack(">H", len(images)) + images + labels


# IDX: a valid pair (2 images of 3x3, labels 0 and 9), plain, gzipped, and two-member gzip;
# a labels file with a label of 10; an f32 file; a truncated images file.
imgs = idx(0x08, [2, 3, 3], bytes(range(18)))
labs = idx(0x08, [2], bytes([0, 9]))
out("idx", "pair-plain", pair(imgs, labs))
out("idx", "pair-gzip", pair(gzip.compress(imgs, mtime=0), gzip.compress(labs, mtime=0)))
out("idx", "pair-two-members", pair(gzip.compress(imgs[:7], mtime=0) + gzip.compress(imgs[7:], mtime=0), labs))
out("idx", "bad-label", pair(imgs, idx(0x08, [2], bytes([0, 10]))))
out("idx", "f32", pair(idx(0x0D, [1, 2], struct.pack(">2f", 1.5, -2.0)), labs))
out("idx", "truncated", pair(imgs[:-3], labs))

# CIFAR-10: one record, two records, a bad label, a truncated record.
rec = bytes([3]) + bytes(i % 256 for i in range(3072))
out("cifar", "one-record", rec)
out("cifar", "two-records", rec + bytes([9]) + rec[1:])
out("cifar", "bad-label", bytes([10]) + rec[1:])
out("cifar", "truncated", rec[:-1])


def safetensors(entries, metadata=None):
    """entries: list of (name, dtype, shape, raw bytes), laid out in the order given."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
out("safetensors", "empty", safetensors([]))
out("safetensors", "one-tensor", safetensors([("a", "F32", [2], f32(1, 2))], {"format": "pt"}))
out("safetensors", "dtypes", safetensors([
    ("f16", "F16", [2], struct.pack("<2e", 1.0, -0.5)),
    ("bf16", "BF16", [1], b"\x80\x3f"),
    ("i64", "I64", [], struct.pack("<q", 7)),
    ("u8", "U8", [3], b"\x01\x02\x03"),
]))
# The seed-aconc state_dict's names with the metadata a checkpoint carries, every tensor of
# shape [1]: the names match and the shapes do not.
names = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias",
         "acon1.p1", "acon1.p2", "acon1.beta", "conv4.weight", "conv4.bias", "linear1.weight",
         "linear1.bias", "linear2.weight", "linear2.bias"]
meta = {"format": "pt", "model": "seed-aconc", "input": "1x28x28", "classes": "10",
        "normalization_mean": "0.286", "normalization_std": "0.353", "step": "1"}
out("safetensors", "seed-aconc-names", safetensors([(n, "F32", [1], f32(0.5)) for n in names], meta))
meta_names = ["acon1.fc1.weight", "acon1.fc1.bias", "acon1.bn1.weight", "acon1.bn1.bias",
              "acon1.bn1.running_mean", "acon1.bn1.running_var"]
out("safetensors", "seed-meta-names", safetensors(
    [(n, "F32", [1], f32(0.5)) for n in meta_names]
    + [("acon1.bn1.num_batches_tracked", "I64", [], struct.pack("<q", 3))],
    dict(meta, model="seed-meta")))


# Whole state dicts of the three seed networks (Sources/Training/Models.swift), with the names,
# shapes, dtypes and metadata our trainer writes, so the fuzz target's strict load succeeds and
# reaches the copy into the model: each for 1x28x28 inputs (Fashion-MNIST) and for 3x32x32
# (CIFAR-10), 10 classes. Entries are laid out as safetensors' writer lays them out (I64
# first, then by name), so the files round-trip byte for byte. The values are a short repeating
# ramp: they only have to be copied, and they keep the checked-in files compressible.
def seed_state_dict(model, c, h, w, classes):
    def side(n, pad, stride):
        return (n + 2 * pad - 3) // stride + 1
    h4 = side(side(side(side(h, 1, 1), 0, 2), 0, 2), 1, 2)
    w4 = side(side(side(side(w, 1, 1), 0, 2), 0, 2), 1, 2)
    shapes = {
        "conv1.weight": [32, c, 3, 3], "conv1.bias": [32],
        "conv2.weight": [64, 32, 3, 3], "conv2.bias": [64],
        "conv3.weight": [64, 64, 3, 3], "conv3.bias": [64],
        "conv4.weight": [64, 64, 3, 3], "conv4.bias": [64],
        "linear1.weight": [64, 64 * h4 * w4], "linear1.bias": [64],
        "linear2.weight": [classes, 64], "linear2.bias": [classes],
    }
    counts = {}
    if model == "seed-aconc":
        shapes.update({"acon1.p1": [1, 64, 1, 1], "acon1.p2": [1, 64, 1, 1], "acon1.beta": [1, 64, 1, 1]})
    elif model == "seed-meta":
        hidden = max(16, 64 // 16)  # MetaAconC's width: max(r, C / r) with r = 16
        shapes.update({"acon1.fc1.weight": [hidden, 64, 1, 1], "acon1.fc1.bias": [hidden],
                       "acon1.fc2.weight": [64, hidden, 1, 1], "acon1.fc2.bias": [64],
                       "acon1.p1": [1, 64, 1, 1], "acon1.p2": [1, 64, 1, 1]})
        for bn, width in (("acon1.bn1", hidden), ("acon1.bn2", 64)):
            shapes.update({bn + ".weight": [width], bn + ".bias": [width],
                           bn + ".running_mean": [width], bn + ".running_var": [width]})
            counts[bn + ".num_batches_tracked"] = 1200
    entries = [(n, "I64", [], struct.pack("<q", v)) for n, v in sorted(counts.items())]
    for name in sorted(shapes):
        count = 1
        for d in shapes[name]:
            count *= d
        if name.endswith("running_var"):
            values = [1.0 + (i % 7) / 8 for i in range(count)]
        else:
            values = [((i % 251) - 125) / 1024 for i in range(count)]
        entries.append((name, "F32", shapes[name], struct.pack("<%df" % count, *values)))
    return entries


fashion = {"format": "pt", "input": "1x28x28", "classes": "10", "normalization_mean": "0.286",
           "normalization_std": "0.353", "data": "fashion-mnist", "step": "1200"}
cifar = {"format": "pt", "input": "3x32x32", "classes": "10", "normalization_mean": "0.4914,0.4822,0.4465",
         "normalization_std": "0.247,0.2435,0.2616", "data": "cifar10", "step": "1200"}
for model in ("seed-relu", "seed-aconc", "seed-meta"):
    out("safetensors", model + "-1x28x28", safetensors(seed_state_dict(model, 1, 28, 28, 10), dict(fashion, model=model)))
    out("safetensors", model + "-3x32x32", safetensors(seed_state_dict(model, 3, 32, 32, 10), dict(cifar, model=model)))
