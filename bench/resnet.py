"""The edge-class CNN of realistic cost: a ResNet-18-style network at 3x64x64 in plain torch (3x3 stride-1 stem
+ max-pool, 2-2-2-2 BasicBlocks 64..512, 0.56 GMAC per image), random weights, exported and quantized by
fedge's own export stages (the same ONNX export and ONNX Runtime QDQ quantization a release gets), calibrated
on random N(0, 1) images. Dense and 2:4-pruned variants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

INPUT = (3, 64, 64)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18Style(nn.Module):
    def __init__(self, num_classes: int = 100) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@dataclass
class Artifacts:
    torch_model: nn.Module
    fp32: Path
    int8_cpu: Path
    int8_trt: Path


def build(out: Path, prune: str = "none", seed: int = 0, calib: int = 200) -> Artifacts:
    """FP32 ONNX + both INT8 QDQ variants, through fedge's export stages."""
    from fedge.client.jobs import calibration_minmax
    from fedge.export.onnx_export import to_onnx
    from fedge.export.prune import PruneConfig, prune_model
    from fedge.export.quantize import QuantizeConfig, preprocess, quantize_variants

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ResNet18Style().eval()
    prune_model(model, PruneConfig.parse(prune))
    x = np.random.default_rng(seed).standard_normal((calib, *INPUT)).astype(np.float32)
    fp32 = to_onnx(model, x[:2], out / "model.fp32.onnx")
    pre = preprocess(fp32, out / "model.pre.onnx")
    ranges = calibration_minmax(pre.read_bytes(), x)
    q = quantize_variants(pre, {k: tuple(v) for k, v in ranges.items()}, out, QuantizeConfig())
    return Artifacts(model, fp32, q["int8_cpu"], q["int8_trt"])


def macs_per_image(model: nn.Module) -> float:
    total = 0

    def hook(m, inp, outp):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += outp.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        model(torch.zeros(1, *INPUT))
    for h in hs:
        h.remove()
    return float(total)
