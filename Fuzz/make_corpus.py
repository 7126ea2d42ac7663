#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into Fuzz/Corpus (small valid and nearly valid files).

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
    """entries: list of (name, dtype, shape, raw bytes), laid out in order."""
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
