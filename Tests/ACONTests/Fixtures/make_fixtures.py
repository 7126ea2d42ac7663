"""make_fixtures.py: PyTorch-written fixtures for the ACON family's layers (AconFamilyFixtureTests).

Each file holds the input `x`, the upstream gradient `dy`, the output `y`, the input gradient `dx`,
every parameter by its state_dict name, its gradient as `grad.<name>`, and for modules with
BatchNorm the buffers before (`<name>`) and after (`after.<name>`) the forward pass. Computed in
float64 from float32-representable inputs, stored as float32 (num_batches_tracked as int64).

Modules: Meta-ACON channel-wise (acon.py's MetaAconC, with and without BatchNorm), layer-wise
(β_n = σ(mean over C, H, W of x[n]): this package's documented normalisation of the paper's
σ(Σx)), pixel-wise (β = σ(x)), and TFNet's Acon_FReLU at stride 1 and 2, train and eval mode.

Run: /work/venv-torch/bin/python Tests/ACONTests/Fixtures/make_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(14)
DT = torch.float64


def f32(t):
    """Rounds to float32 values, kept in float64."""
    return t.to(torch.float32).to(DT)


class MetaAconC(nn.Module):
    """Meta-ACON, channel-wise switch; `bn=False` leaves out bn1 and bn2."""

    def __init__(self, width, r=16, bn=True):
        super().__init__()
        hidden = max(r, width // r)
        self.fc1 = nn.Conv2d(width, hidden, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(hidden) if bn else None
        self.fc2 = nn.Conv2d(hidden, width, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(width) if bn else None
        self.p1 = nn.Parameter(torch.randn(1, width, 1, 1))
        self.p2 = nn.Parameter(torch.randn(1, width, 1, 1))

    def forward(self, x):
        h = self.fc1(x.mean(dim=(2, 3), keepdim=True))
        if self.bn1 is not None:
            h = self.bn1(h)
        h = self.fc2(h)
        if self.bn2 is not None:
            h = self.bn2(h)
        beta = torch.sigmoid(h)
        d = (self.p1 - self.p2) * x
        return d * torch.sigmoid(beta * d) + self.p2 * x


class MetaAconLayerwise(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.p1 = nn.Parameter(torch.randn(1, width, 1, 1))
        self.p2 = nn.Parameter(torch.randn(1, width, 1, 1))

    def forward(self, x):
        beta = torch.sigmoid(x.mean(dim=tuple(range(1, x.dim())), keepdim=True))
        d = (self.p1 - self.p2) * x
        return d * torch.sigmoid(beta * d) + self.p2 * x


class MetaAconPixelwise(MetaAconLayerwise):
    def forward(self, x):
        beta = torch.sigmoid(x)
        d = (self.p1 - self.p2) * x
        return d * torch.sigmoid(beta * d) + self.p2 * x


class AconFReLU(nn.Module):
    """TFNet's Acon_FReLU, as in nmaac/acon TFNet/network.py (same state_dict names)."""

    def __init__(self, width, stride=1):
        super().__init__()
        self.stride = stride
        self.conv_frelu = nn.Conv2d(width, width, 3, stride, 1, groups=width, bias=True)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        a = self.maxpool(x) if self.stride == 2 else x
        b = self.bn1(self.conv_frelu(x))
        return self.bn2((a - b) * torch.sigmoid(a - b) + b)


def randomize(module):
    """Float32-representable random parameters and running statistics (non-trivial BN)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(f32(torch.randn_like(p) * (0.5 if "bn" in name else 1.0) + (1.0 if name.endswith("bn1.weight") or name.endswith("bn2.weight") else 0.0)))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(f32(torch.randn_like(b) * 0.3))
            elif name.endswith("running_var"):
                b.copy_(f32(torch.rand_like(b) + 0.5))
            elif name.endswith("num_batches_tracked"):
                b.fill_(3)


def write(name, module, shape, train=True):
    module = module.to(DT)
    randomize(module)
    module.train(train)
    x = f32(torch.randn(*shape, dtype=DT) * 1.5).requires_grad_(True)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    y = module(x)
    dy = f32(torch.randn_like(y))
    y.backward(dy)
    out = {"x": x.detach(), "dy": dy, "y": y.detach(), "dx": x.grad}
    for k, v in before.items():
        out[k] = v
    for k, p in module.named_parameters():
        out["grad." + k] = p.grad
    for k, b in module.named_buffers():
        out["after." + k] = b.detach()
    out = {k: (v.to(torch.float32) if v.is_floating_point() else v).contiguous() for k, v in out.items()}
    save_file(out, os.path.join(HERE, name + ".safetensors"), metadata={"train": str(train)})


write("metaaconc_bn", MetaAconC(20, r=4, bn=True), (3, 20, 3, 3))
write("metaaconc_nobn", MetaAconC(20, r=4, bn=False), (1, 20, 2, 2))
write("metaacon_layerwise", MetaAconLayerwise(5), (1, 5, 3, 3))
write("metaacon_layerwise_b3", MetaAconLayerwise(17), (3, 17, 2, 1))
write("metaacon_pixelwise", MetaAconPixelwise(3), (2, 3, 2, 3))
write("acon_frelu_s1_train", AconFReLU(3, 1), (2, 3, 5, 5), train=True)
write("acon_frelu_s2_train", AconFReLU(3, 2), (2, 3, 5, 5), train=True)
write("acon_frelu_s1_eval", AconFReLU(3, 1), (2, 3, 4, 4), train=False)
write("acon_frelu_s2_eval", AconFReLU(3, 2), (1, 3, 5, 5), train=False)
