#!/usr/bin/env python3
"""Writes the image fixtures of Tests/ImageDataTests/Fixtures with PIL (and torchvision where
installed): a small folder data set, one file per decoder case with PIL's convert("RGB") pixels
beside it, and transform outputs of torchvision's functional API on PIL images.
Run: /work/venv-torch/bin/python scripts/make_image_fixtures.py"""
import io, json, os, shutil
import numpy as np
from PIL import Image, ImageEnhance

out = os.path.join(os.path.dirname(__file__), "..", "Tests", "ImageDataTests", "Fixtures")
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
rng = np.random.default_rng(18)


def picture(w, h, seed):
    """A smooth synthetic picture with edges (gradients, a disc, noise)."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = 127 + 100 * np.sin(x / (3 + seed % 5) + y / 7.0)
    b = 255 * x / max(1, w - 1)
    c = np.where((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2, 220, 30)
    img = np.stack([a, b, c], -1) + r.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def raw(path, img):
    with open(path, "wb") as f:
        f.write(np.asarray(img.convert("RGB"), dtype=np.uint8).tobytes())


manifest = {"decode": [], "transforms": [], "rrc_fallback": []}

# --- a folder data set: classes sorted by code point ("Zebra" < "ant" < "bee"), jpg/jpeg/png, a
# non-image file ignored, a PNG named .jpg (sniffed by content).
folder = os.path.join(out, "folder")
for split, n in (("train", 3), ("val", 1)):
    for ci, cls in enumerate(["ant", "bee", "Zebra"]):
        d = os.path.join(folder, split, cls)
        os.makedirs(d)
        for i in range(n):
            p = picture(40 + 4 * i, 30 + 2 * ci, 100 * ci + i + (50 if split == "val" else 0))
            ext = ["jpg", "png", "jpeg"][i % 3]
            p.save(os.path.join(d, f"img{i}.{ext}"), **({"quality": 90} if ext != "png" else {}))
        if split == "train":
            with open(os.path.join(d, "notes.txt"), "w") as f:
                f.write("not an image\n")
picture(36, 28, 7).save(os.path.join(folder, "train", "bee", "actually-png.jpg"), format="PNG")

# --- decoder cases: the file and PIL's convert("RGB") of it.
dec = os.path.join(out, "decode")
os.makedirs(dec)


def case(name, img, fmt, note, **kw):
    path = os.path.join(dec, name)
    img.save(path, format=fmt, **kw)
    back = Image.open(path)
    back.load()
    raw(path + ".rgb", back.convert("RGB"))
    manifest["decode"].append({"file": name, "width": back.width, "height": back.height, "note": note,
                               "mode": back.mode})


base = picture(37, 23, 1)  # odd sizes: not multiples of 8 or 16
case("rgb420.jpg", base, "JPEG", "4:2:0 JPEG", quality=92)
case("rgb444.jpg", base, "JPEG", "4:4:4 JPEG", quality=92, subsampling=0)
case("gray.jpg", base.convert("L"), "JPEG", "grayscale JPEG", quality=92)
case("cmyk.jpg", base.convert("CMYK"), "JPEG", "CMYK JPEG (Adobe, inverted)", quality=95)
case("progressive.jpg", base, "JPEG", "progressive JPEG", quality=90, progressive=True)
case("rgb.png", base, "PNG", "8-bit RGB PNG")
rgba = base.copy()
rgba.putalpha(Image.fromarray((np.arange(37 * 23).reshape(23, 37) % 256).astype(np.uint8)))
case("rgba.png", rgba, "PNG", "RGBA PNG (alpha dropped)")
case("gray.png", base.convert("L"), "PNG", "8-bit gray PNG")
case("gray-alpha.png", base.convert("LA"), "PNG", "gray+alpha PNG")
case("bilevel.png", base.convert("1"), "PNG", "1-bit PNG")
pal = base.convert("P", palette=Image.ADAPTIVE, colors=16)
case("palette.png", pal, "PNG", "palette PNG")
pal_t = pal.copy()
pal_t.info["transparency"] = 3
case("palette-trns.png", pal_t, "PNG", "palette PNG with tRNS", transparency=3)
case("tiny.png", picture(1, 1, 3), "PNG", "1x1 PNG")
case("tiny.jpg", picture(1, 1, 3), "JPEG", "1x1 JPEG")
# 16-bit: RGB (PIL keeps the high byte) and gray (PIL's I;16 convert("RGB") clips at 255; we take
# the high byte: the expected bytes are written as such, see the test).
g16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257 + rng.integers(0, 200, (23, 37))).astype(np.uint16)
im16 = Image.fromarray(g16)
p = os.path.join(dec, "gray16.png")
im16.save(p)
with open(p + ".rgb", "wb") as f:
    f.write(np.repeat((g16 >> 8).astype(np.uint8)[:, :, None], 3, 2).tobytes())
manifest["decode"].append({"file": "gray16.png", "width": 37, "height": 23, "note": "16-bit gray PNG (high byte)", "mode": "I;16"})
# 16-bit RGB written by hand (PIL cannot write it): zlib + IHDR, the high byte expected.
import struct, zlib
rgb16 = (np.asarray(base, dtype=np.uint16) * 257 + rng.integers(0, 250, (23, 37, 3))).astype(">u2")
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
rows = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(23))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 37, 23, 16, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
with open(os.path.join(dec, "rgb16.png"), "wb") as f:
    f.write(png)
back = Image.open(os.path.join(dec, "rgb16.png")).convert("RGB")
raw(os.path.join(dec, "rgb16.png.rgb"), back)
assert (np.asarray(back) == (rgb16.astype(np.uint16) >> 8).astype(np.uint8)).all()
manifest["decode"].append({"file": "rgb16.png", "width": 37, "height": 23, "note": "16-bit RGB PNG", "mode": "RGB"})
# An Adam7-interlaced PNG (PIL cannot write one): the same rows, interlaced by hand.
def adam7(img):
    a = np.asarray(img)
    h, w, _ = a.shape
    passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    data = b""
    for y0, x0, dy, dx in passes:
        sub = a[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        data += b"".join(b"\x00" + sub[y].tobytes() for y in range(sub.shape[0]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")
with open(os.path.join(dec, "interlaced.png"), "wb") as f:
    f.write(adam7(base))
back = Image.open(os.path.join(dec, "interlaced.png")); back.load()
raw(os.path.join(dec, "interlaced.png.rgb"), back.convert("RGB"))
manifest["decode"].append({"file": "interlaced.png", "width": 37, "height": 23, "note": "Adam7-interlaced PNG", "mode": "RGB"})

# --- transforms, on a PNG source (lossless, so both sides start from the same bytes).
src = picture(53, 41, 2)
src.save(os.path.join(out, "source.png"))
try:
    import sys, types
    # torchvision's wheel without its matching C extension fails in its meta registrations (the
    # detection ops); the transforms do not need them.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torch
    import torchvision.transforms.functional as F
    from torchvision.transforms import InterpolationMode, RandomResizedCrop
    have_tv = True
except Exception:
    have_tv = False


def t_resize(img, s):
    if have_tv:
        return F.resize(img, s, interpolation=InterpolationMode.BILINEAR, antialias=True)
    w, h = img.size
    size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
    return img.resize(size, Image.BILINEAR)


def t_center(img, h, w):
    return F.center_crop(img, [h, w]) if have_tv else None


def t_resized_crop(img, top, left, h, w, s):
    if have_tv:
        return F.resized_crop(img, top, left, h, w, [s, s], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return img.crop((left, top, left + w, top + h)).resize((s, s), Image.BILINEAR)


def save_t(name, img, spec):
    raw(os.path.join(out, name + ".rgb"), img)
    manifest["transforms"].append({"name": name, "width": img.width, "height": img.height, **spec})


save_t("resize24", t_resize(src, 24), {"op": "resize", "size": 24})
save_t("resize7", t_resize(src, 7), {"op": "resize", "size": 7})
save_t("resize100", t_resize(src, 100), {"op": "resize", "size": 100})
save_t("resize30-center20x16", t_center(t_resize(src, 30), 20, 16), {"op": "resize+center", "size": 30, "crop": [20, 16]})
save_t("center60", t_center(src, 60, 60), {"op": "center", "crop": [60, 60]})
save_t("resizedcrop", t_resized_crop(src, 5, 9, 30, 22, 16), {"op": "resized_crop", "box": [5, 9, 30, 22], "size": 16})
save_t("resizedcrop-up", t_resized_crop(src, 3, 4, 10, 12, 32), {"op": "resized_crop", "box": [3, 4, 10, 12], "size": 32})
save_t("hflip", F.hflip(src) if have_tv else src.transpose(Image.FLIP_LEFT_RIGHT), {"op": "hflip"})
for f in (0.4, 1.3):
    save_t(f"brightness{f}", F.adjust_brightness(src, f), {"op": "brightness", "factor": f})
    save_t(f"contrast{f}", F.adjust_contrast(src, f), {"op": "contrast", "factor": f})
    save_t(f"saturation{f}", F.adjust_saturation(src, f), {"op": "saturation", "factor": f})
if have_tv:
    t = F.normalize(F.to_tensor(t_center(src, 32, 32)), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    t.numpy().astype("<f4").tofile(os.path.join(out, "normalize.f32"))
    manifest["normalize"] = {"crop": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    # RandomResizedCrop's fallback: scale > 1 never fits, so get_params ends in its central crop.
    for (w, h) in [(500, 375), (375, 500), (1000, 100), (100, 1000), (64, 64), (1, 1), (3, 200)]:
        img = Image.new("RGB", (w, h))
        i, j, hh, ww = RandomResizedCrop.get_params(img, scale=[2.0, 3.0], ratio=[3 / 4, 4 / 3])
        manifest["rrc_fallback"].append({"width": w, "height": h, "top": i, "left": j, "h": hh, "w": ww})

with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print("fixtures in", os.path.normpath(out), "torchvision:", have_tv)
