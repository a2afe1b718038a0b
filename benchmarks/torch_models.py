"""ResNet-18 and MobileNetV2, built layer by layer in PyTorch with random weights, exported to ONNX.

Only the benchmark uses this (torchvision does not import with the PyTorch available here, and
onnxslim never depends on PyTorch). Exports are cached in benchmarks/out/. Random weights give
latency and output agreement, not accuracy; BatchNorm statistics are randomised so that the
folded weights are not trivially uniform.
"""

from __future__ import annotations

from pathlib import Path


def _build(name: str):
    import torch
    from torch import nn

    def bn(c):
        b = nn.BatchNorm2d(c)
        b.running_mean.uniform_(-0.1, 0.1)
        b.running_var.uniform_(0.5, 1.5)
        b.weight.data.uniform_(0.5, 1.5)
        b.bias.data.uniform_(-0.1, 0.1)
        return b

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), bn(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            layers, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            mods = []
            if expand != 1:
                mods += [nn.Conv2d(cin, hidden, 1, bias=False), bn(hidden), nn.ReLU6()]
            mods += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), bn(hidden), nn.ReLU6(),
                     nn.Conv2d(hidden, cout, 1, bias=False), bn(cout)]
            self.body = nn.Sequential(*mods)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            mods = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), bn(32), nn.ReLU6()]
            cin = 32
            for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1)):
                for i in range(n):
                    mods.append(Inverted(cin, c, s if i == 0 else 1, t))
                    cin = c
            mods += [nn.Conv2d(cin, 1280, 1, bias=False), bn(1280), nn.ReLU6()]
            self.features = nn.Sequential(*mods)
            self.fc = nn.Linear(1280, 1000)

        def forward(self, x):
            x = self.features(x)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    model = {"resnet18": ResNet18, "mobilenetv2": MobileNetV2}[name]()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model.eval()


def export(name: str, out_dir: Path) -> Path:
    """benchmarks/out/<name>.onnx (opset 17, dynamic batch), built once and cached."""
    path = out_dir / f"{name}.onnx"
    if path.exists():
        return path
    import torch

    model = _build(name)
    x = torch.randn(1, 3, 224, 224)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    tmp.rename(path)
    return path
