"""torchvision's twin of acon-bench's data.folder row: ImageFolder + DataLoader (PIL decode,
RandomResizedCrop(224), RandomHorizontalFlip, ToTensor, Normalize) over DIR/train with N worker
processes, batches of 64; prints {"images_per_s": ...} (the median epoch of R, after a warm-up
epoch that starts the workers). --probe only checks that torchvision and PIL import."""
import argparse, json, sys, time, types

# A torchvision wheel whose C extension does not match torch fails in its detection-op meta
# registrations; the data path does not use them.
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
import torch  # noqa: E402
import torchvision  # noqa: E402,F401
from torchvision import datasets, transforms  # noqa: E402
import PIL  # noqa: E402,F401

p = argparse.ArgumentParser()
p.add_argument("--probe", action="store_true")
p.add_argument("--dir")
p.add_argument("--workers", type=int, default=1)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--repetitions", type=int, default=3)
a = p.parse_args()
if a.probe:
    print("{}")
    sys.exit(0)
torch.set_num_threads(1)
t = transforms.Compose([
    transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
ds = datasets.ImageFolder(a.dir + "/train", transform=t)
loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                     persistent_workers=True, prefetch_factor=2)
for _ in loader:  # warm-up: starts the workers
    pass
times = []
for _ in range(a.repetitions):
    t0 = time.perf_counter()
    n = 0
    for x, y in loader:
        n += x.shape[0]
    times.append(time.perf_counter() - t0)
times.sort()
print(json.dumps({"images_per_s": n / times[len(times) // 2], "images": n}))
