"""Hand-written torch modules: the architectures `transformers` does not give (or gives only
with timm/torchvision), written as users write them.

- MobileNetV3-style: inverted residuals, depthwise convs, squeeze-excite, hard-swish/sigmoid.
- YOLO-style detector: Conv-BN-SiLU backbone with split/concat blocks, SPPF (three MaxPools),
  an upsample-and-concat neck, and a decoding head whose anchor grid is built from the feature
  map's own size (Range over dynamic dims), output ``[N, 4 + classes, anchors]``.
- U-Net: two encoder levels, a bottleneck, ConvTranspose up-sampling and skip concatenation.
- CRNN text-line recognizer: convs that reduce the height to 1, a bidirectional LSTM over the
  width, per-step class scores ``[T, N, classes]`` (log-softmax); batch fixed at 1.
- GRU tagger with an explicit recurrent state ``h0 [layers, batch, hidden]`` in and ``hn`` out:
  inputs that do not share axis 0.
- torch.nn.TransformerEncoder classifier with a key padding mask.
"""

from __future__ import annotations

import torch
from torch import nn

from arch_spec import Spec, named, pixels, seeded

NCHW = {0: "batch", 2: "height", 3: "width"}


def conv_bn(cin, cout, k=3, s=1, groups=1, act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         act() if act else nn.Identity())


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cexp, cout, k, s, se, act):
        super().__init__()
        self.block = nn.Sequential(conv_bn(cin, cexp, 1, act=act), conv_bn(cexp, cexp, k, s, groups=cexp, act=act),
                                   SqueezeExcite(cexp) if se else nn.Identity(), conv_bn(cexp, cout, 1, act=None))
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        hs, re = nn.Hardswish, nn.ReLU
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=hs), InvertedResidual(16, 16, 16, 3, 2, True, re),
            InvertedResidual(16, 48, 24, 3, 2, False, re), InvertedResidual(24, 64, 24, 3, 1, False, re),
            InvertedResidual(24, 64, 32, 5, 2, True, hs), InvertedResidual(32, 96, 32, 5, 1, True, hs),
            conv_bn(32, 96, 1, act=hs))
        self.head = nn.Sequential(nn.Linear(96, 128), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(128, classes))

    def forward(self, pixel_values):
        return (self.head(self.features(pixel_values).mean((2, 3))),)


class C2f(nn.Module):
    """YOLOv8's split-then-concat block."""

    def __init__(self, c, n=1):
        super().__init__()
        self.cv1 = conv_bn(c, c, 1, act=nn.SiLU)
        self.blocks = nn.ModuleList(nn.Sequential(conv_bn(c // 2, c // 2, 3, act=nn.SiLU),
                                                  conv_bn(c // 2, c // 2, 3, act=nn.SiLU)) for _ in range(n))
        self.cv2 = conv_bn(c // 2 * (2 + n), c, 1, act=nn.SiLU)

    def forward(self, x):
        parts = list(self.cv1(x).chunk(2, 1))
        for block in self.blocks:
            parts.append(parts[-1] + block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2 = conv_bn(c, c // 2, 1, act=nn.SiLU), conv_bn(c * 2, c, 1, act=nn.SiLU)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YoloStyle(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        s = nn.SiLU
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2, act=s), conv_bn(16, 32, 3, 2, act=s), C2f(32))
        self.p4 = nn.Sequential(conv_bn(32, 64, 3, 2, act=s), C2f(64))
        self.p5 = nn.Sequential(conv_bn(64, 64, 3, 2, act=s), C2f(64), SPPF(64))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.neck = C2f(128)
        self.heads = nn.ModuleList([nn.Conv2d(128, 4 + classes, 1), nn.Conv2d(64, 4 + classes, 1)])
        self.strides = (16, 32)

    def forward(self, images):
        p4 = self.p4(self.stem(images))
        p5 = self.p5(p4)
        n4 = self.neck(torch.cat([self.up(p5), p4], 1))
        outs = []
        for head, feat, stride in zip(self.heads, (n4, p5), self.strides):
            y = head(feat)
            n, c, h, w = y.shape
            gy, gx = torch.meshgrid(torch.arange(h, dtype=y.dtype), torch.arange(w, dtype=y.dtype), indexing="ij")
            grid = torch.stack((gx, gy), 0).reshape(1, 2, h * w)
            y = y.reshape(n, c, h * w)
            xy = (y[:, :2].sigmoid() * 2 - 0.5 + grid) * stride
            wh = (y[:, 2:4].sigmoid() * 2) ** 2 * stride
            outs.append(torch.cat([xy, wh, y[:, 4:].sigmoid()], 1))
        return (torch.cat(outs, 2),)


class UNet(nn.Module):
    def __init__(self, classes=3, c=16):
        super().__init__()
        def double(a, b):
            return nn.Sequential(conv_bn(a, b), conv_bn(b, b))
        self.enc1, self.enc2, self.mid = double(3, c), double(c, 2 * c), double(2 * c, 4 * c)
        self.pool = nn.MaxPool2d(2)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, 2), double(4 * c, 2 * c)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * c, c, 2, 2), double(2 * c, c)
        self.out = nn.Conv2d(c, classes, 1)

    def forward(self, images):
        e1 = self.enc1(images)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return (self.out(d1),)


class CRNN(nn.Module):
    """Text-line recognizer, input [1, 1, 32, W] grayscale, output [W/4, 1, classes]."""

    def __init__(self, classes=37, hidden=32):
        super().__init__()
        self.cnn = nn.Sequential(conv_bn(1, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d(2),
                                 conv_bn(32, 48), nn.MaxPool2d((2, 1)), conv_bn(48, 48), nn.MaxPool2d((4, 1)))
        self.rnn = nn.LSTM(48, hidden, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, images):
        f = self.cnn(images).squeeze(2).permute(2, 0, 1)  # [T, N, C]
        y, _ = self.rnn(f)
        return (self.fc(y).log_softmax(-1),)


class GRUTagger(nn.Module):
    def __init__(self, features=16, hidden=32, classes=8):
        super().__init__()
        self.gru = nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x, h0):
        y, hn = self.gru(x, h0)
        return self.fc(y), hn


class TextClassifier(nn.Module):
    def __init__(self, vocab=100, d=32, classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, 64, d) * 0.1)
        layer = nn.TransformerEncoderLayer(d, 2, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(d, classes)

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids) + self.pos[:, : input_ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).to(x.dtype)
        return (self.fc((x * m).sum(1) / m.sum(1)),)


class NoFastPath(TextClassifier):
    """The legacy exporter has no symbolic for nn.TransformerEncoderLayer's fused eval fast path
    (aten::_transformer_encoder_layer_fwd): users turn it off for the export."""

    def forward(self, input_ids, attention_mask):
        before = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return super().forward(input_ids, attention_mask)
        finally:
            torch.backends.mha.set_fastpath_enabled(before)


def image_spec(name, exporter, opset, cls, side, test_side, out_axes, output="logits", input_name="images",
               batch=True, **kw):
    dyn_in = {a: d for a, d in NCHW.items() if batch or a}
    return Spec(name, f"hand-written {cls.__name__}", exporter, opset, cls,
                lambda b, s: named(**{input_name: pixels(b, s)}), [output],
                export_at=(2 if batch else 1, side), test_at=(3 if batch else 1, test_side),
                dynamic={input_name: dyn_in, output: out_axes}, **kw)


def crnn_inputs(batch, width):
    return named(images=torch.rand(batch, 1, 32, width, generator=seeded(0)))


def gru_inputs(batch, steps):
    return named(x=torch.randn(batch, steps, 16, generator=seeded(0)),
                 h0=0.1 * torch.randn(2, batch, 32, generator=seeded(1)))


def text_inputs(batch, length):
    from arch_spec import padded_mask, token_ids
    return named(input_ids=token_ids(batch, length, 100), attention_mask=padded_mask(batch, length))


def specs() -> list[Spec]:
    anchors = {0: "batch", 2: "anchors"}
    seg = dict(NCHW)
    crnn_dyn = {"images": {3: "width"}, "logits": {0: "steps"}}
    gru_dyn = {"x": {0: "batch", 1: "steps"}, "h0": {1: "batch"}, "logits": {0: "batch", 1: "steps"},
               "hn": {1: "batch"}}
    text_dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"}}
    return [
        image_spec("mobilenetv3_legacy_op14", "legacy", 14, MobileNetV3, 32, 48, {0: "batch"},
                   input_name="pixel_values"),
        image_spec("mobilenetv3_dynamo_op18", "dynamo", 18, MobileNetV3, 32, 48, {0: "batch"},
                   input_name="pixel_values"),
        image_spec("yolo_legacy_op12", "legacy", 12, YoloStyle, 64, 96, anchors, output="detections",
                   tags=["detection"]),
        image_spec("yolo_dynamo_op19", "dynamo", 19, YoloStyle, 64, 96, anchors, output="detections",
                   tags=["detection"]),
        image_spec("yolo_external_legacy_op16", "legacy", 16, YoloStyle, 64, 96, anchors, output="detections",
                   tags=["detection"], external=True),
        image_spec("unet_legacy_op11", "legacy", 11, UNet, 32, 48, seg, output="mask", tags=["segmentation"]),
        image_spec("unet_dynamo_op21", "dynamo", 21, UNet, 32, 48, seg, output="mask", tags=["segmentation"]),
        image_spec("unet_neg1_legacy_op13", "legacy", 13, UNet, 32, 48, seg, output="mask", tags=["segmentation"],
                   neg1_dims=True, notes="symbolic input dims rewritten as dim_value -1"),
        image_spec("unet_fp16_dynamo_op18", "dynamo", 18, UNet, 32, 48, seg, output="mask", tags=["segmentation"],
                   fp16=True),
        image_spec("mobilenetv3_ir3_legacy_op9", "legacy", 9, MobileNetV3, 32, 48, {0: "batch"},
                   input_name="pixel_values", ir3=True, notes="opset 9 export converted to opset 8, IR 3"),
        Spec("lstm_crnn_legacy_op12", "hand-written CRNN (bidirectional LSTM)", "legacy", 12, CRNN, crnn_inputs,
             ["logits"], export_at=(1, 96), test_at=(1, 128), dynamic=crnn_dyn, tags=["recurrent", "text_line"],
             notes="batch fixed at 1, width dynamic"),
        Spec("lstm_crnn_dynamo_op18", "hand-written CRNN (bidirectional LSTM)", "dynamo", 18, CRNN, crnn_inputs,
             ["logits"], export_at=(1, 96), test_at=(1, 128), dynamic=crnn_dyn, tags=["recurrent", "text_line"],
             notes="batch fixed at 1, width dynamic"),
        Spec("gru_state_ir3_legacy_op9", "hand-written GRU tagger", "legacy", 9, GRUTagger, gru_inputs, ["logits", "hn"],
             export_at=(2, 10), test_at=(3, 7), dynamic=gru_dyn, tags=["recurrent", "state_input"], ir3=True,
             notes="opset 9 export converted to opset 8, IR 3 (the CRNN's LSTM zeros state needs ConstantOfShape, "
                   "which has no opset 8 version)"),
        Spec("gru_state_legacy_op14", "hand-written GRU tagger", "legacy", 14, GRUTagger, gru_inputs, ["logits", "hn"],
             export_at=(2, 10), test_at=(3, 7), dynamic=gru_dyn, tags=["recurrent", "state_input"],
             notes="h0 [layers, batch, hidden]: inputs that do not share axis 0"),
        Spec("gru_batch1_legacy_op11", "hand-written GRU tagger", "legacy", 11, GRUTagger, gru_inputs, ["logits", "hn"],
             export_at=(1, 10), test_at=(1, 7), dynamic={"x": {1: "steps"}, "logits": {1: "steps"}},
             tags=["recurrent", "state_input"], notes="batch fixed at 1"),
        Spec("torch_transformer_legacy_op16", "hand-written nn.TransformerEncoder", "legacy", 16, NoFastPath,
             text_inputs, ["logits"], dynamic=text_dyn, notes="MHA fast path off for the export"),
        Spec("torch_transformer_dynamo_op20", "hand-written nn.TransformerEncoder", "dynamo", 20, TextClassifier,
             text_inputs, ["logits"], dynamic=text_dyn),
    ]
