"""Writes the PyTorch fixtures of NNTests (FixtureTests.swift): small safetensors files with the
inputs, weights, outputs and gradients of a grouped convolution, a depthwise convolution at
stride 2 (channel multiplier 2), max pooling 3/2/1 (also with NaNs), SiLU and adaptive average pooling to 1×1.

Run with a Python that has torch and safetensors (the tests never need torch):
    /work/venv-torch/bin/python Tests/NNTests/Fixtures/make_fixtures.py
Each file holds `x`, the parameters under their state_dict names, `y`, the upstream gradient
`dy` (of the loss Σ y·dy), and the gradients `dx`, `grad.weight`, `grad.bias`.
"""
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def run(name, module, x_shape, seed, nans=()):
    torch.manual_seed(seed)
    x = torch.randn(*x_shape, dtype=torch.float32)
    if isinstance(module, torch.nn.MaxPool2d):
        # Distinct values so no window has a tie; plus one window of equal values, whose
        # gradient must go to the first maximum, and -inf-free padding.
        x = torch.randperm(x.numel()).reshape(x_shape).float() * 0.01 - 1.0
        x[0, 0, 0:2, 0:2] = 0.5
        for index in nans:  # NaN wins its windows; of two, the later one (PyTorch's rule)
            x[index] = float("nan")
    if isinstance(module, torch.nn.SiLU):
        x = x * 8  # σ saturates on both sides
        x[0, 0, 0, 0:3] = torch.tensor([-100.0, 30.0, 0.0])
    x.requires_grad_(True)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
    y = module(x)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    tensors = {"x": x.detach(), "y": y.detach(), "dy": dy, "dx": x.grad}
    for k, v in module.state_dict().items():
        tensors[k] = v.detach().clone()
    for k, p in module.named_parameters():
        tensors["grad." + k] = p.grad.detach().clone()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(HERE, name + ".safetensors"))


def main():
    torch.manual_seed(0)
    # Grouped: 6 → 9 channels in 3 groups, 3×3, stride 1, padding 1, on a 5×7 map.
    run("grouped_conv", torch.nn.Conv2d(6, 9, 3, stride=1, padding=1, groups=3), (2, 6, 5, 7), 1)
    # Grouped with a rectangular kernel and stride: 4 → 6 in 2 groups, (1, 3), stride (2, 1), padding (0, 1).
    run("grouped_conv_rect", torch.nn.Conv2d(4, 6, (1, 3), stride=(2, 1), padding=(0, 1), groups=2),
        (2, 4, 5, 6), 2)
    # Depthwise at stride 2, channel multiplier 2: 5 → 10 channels, 3×3, padding 1, 9×7 map.
    run("depthwise_conv_s2", torch.nn.Conv2d(5, 10, 3, stride=2, padding=1, groups=5), (2, 5, 9, 7), 3)
    # Max pooling 3/2/1 on an odd map.
    run("maxpool_3_2_1", torch.nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 9), 4)
    run("maxpool_3_2_1_nan", torch.nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 5, 6), 7,
        nans=[(0, 0, 1, 1), (0, 0, 2, 2), (0, 1, 4, 5)])
    # SiLU over a range that includes large magnitudes.
    run("silu", torch.nn.SiLU(), (2, 3, 4, 5), 5)
    # Adaptive average pooling to 1×1 (keeps [N, C, 1, 1]).
    run("adaptive_avgpool_1", torch.nn.AdaptiveAvgPool2d((1, 1)), (2, 3, 5, 3), 6)


if __name__ == "__main__":
    main()
