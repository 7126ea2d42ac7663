#!/usr/bin/env python3
"""PyTorch fixtures for the ShuffleNetV2-ACON unit (split → branch → concat), stride 1 and 2.

    make_shufflenet_unit.py OUTDIR    (needs torch and safetensors; run once, the files are committed)

The block follows the official ShuffleV2Block_ACON (nmaac/acon, ACON/ShuffleNetV2_ACON/network.py):
the same attribute names and nn.Sequential indices, the even/odd `channel_shuffle` of stride 1
(x[:, 0::2] passes through, x[:, 1::2] enters branch_main), `cat((proj, main), 1)`, and AconC
as in acon.py. One deliberate difference: the 3x3 "dw" convolutions use groups=DW_GROUPS, which
is 1 (an ordinary 3x3 convolution) until the Swift package has depthwise convolution; set it to
None (groups = channels, as the official code) and regenerate then.

For each stride s in (1, 2) it writes
  unit_s{s}_state.safetensors   the block's state_dict before the step (loads with strict=True)
  unit_s{s}_io.safetensors      x, y = block(x) in training mode, dy, dx, grad.<param> for every
                                parameter, and after.<buffer> (BatchNorm running statistics after the step)
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

DW_GROUPS = 1


class AconC(nn.Module):
    """(p1 - p2)·x·σ(β·(p1 - p2)·x) + p2·x, with p1, p2, β of shape [1, C, 1, 1] (acon.py)."""

    def __init__(self, width):
        super().__init__()
        self.p1 = nn.Parameter(torch.randn(1, width, 1, 1))
        self.p2 = nn.Parameter(torch.randn(1, width, 1, 1))
        self.beta = nn.Parameter(torch.ones(1, width, 1, 1))

    def forward(self, x):
        d = (self.p1 - self.p2) * x
        return d * torch.sigmoid(self.beta * d) + self.p2 * x


class Unit(nn.Module):
    def __init__(self, inp, oup, mid, stride):
        super().__init__()
        self.stride = stride
        out = oup - inp
        dw = lambda c: c if DW_GROUPS is None else DW_GROUPS
        self.branch_main = nn.Sequential(
            nn.Conv2d(inp, mid, 1, 1, 0), nn.BatchNorm2d(mid), AconC(mid),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=dw(mid)), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, out, 1, 1, 0), nn.BatchNorm2d(out), AconC(out))
        if stride == 2:
            self.branch_proj = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=dw(inp)), nn.BatchNorm2d(inp),
                nn.Conv2d(inp, inp, 1, 1, 0), nn.BatchNorm2d(inp), AconC(inp))

    def forward(self, x):
        if self.stride == 1:
            n, c, h, w = x.shape
            # The official channel_shuffle, step by step.
            parts = x.reshape(n * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, -1, c // 2, h, w)
            return torch.cat((parts[0], self.branch_main(parts[1])), 1)
        return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(14)
    # (inp, oup, mid, stride, input shape): stride 1 takes 2·inp channels; odd map sizes.
    for inp, oup, mid, stride, shape in [(3, 6, 4, 1, (2, 6, 5, 3)), (3, 8, 4, 2, (2, 3, 5, 5))]:
        unit = Unit(inp, oup, mid, stride).train()
        with torch.no_grad():  # non-trivial BatchNorm affine parameters
            for m in unit.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
        state = {k: v.detach().clone().contiguous() for k, v in unit.state_dict().items()}
        x = torch.randn(*shape, requires_grad=True)
        y = unit(x)
        dy = torch.randn_like(y)
        y.backward(dy)
        io = {"x": x.detach(), "y": y.detach(), "dy": dy, "dx": x.grad}
        for name, p in unit.named_parameters():
            io["grad." + name] = p.grad
        for name, b in unit.named_buffers():
            if b.dtype == torch.float32:
                io["after." + name] = b
        save_file(state, os.path.join(outdir, f"unit_s{stride}_state.safetensors"),
                  metadata={"keys_in_order": ",".join(state.keys())})
        save_file({k: v.detach().contiguous() for k, v in io.items()},
                  os.path.join(outdir, f"unit_s{stride}_io.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
