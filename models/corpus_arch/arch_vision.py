"""Vision models from `transformers` configs, tiny (32-64 px images), with random weights.

Spatial axes are exported dynamic, as users export them, even where the model fixes the image
size (ViT, DeiT, CLIP vision and Swin add position embeddings or windows of one size): their
test data keeps the export size and only changes the batch. Convolutional models are checked at
another image size than the one they were traced at.
"""

from __future__ import annotations

import torch
import transformers as tf

from arch_spec import Spec, named, pixels

NCHW = {0: "batch", 2: "height", 3: "width"}
TF_PAD = ("TF 'same' padding is traced at 32 px: the export runs at other sizes but is wrong there "
          "(max abs 4.0 at 48 px), so the test data stays at 32 px")


class Vision(torch.nn.Module):
    """(pixel_values) -> the named fields of the model's output, in order."""

    def __init__(self, model, fields: list[str]):
        super().__init__()
        self.model, self.fields = model, fields

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values)
        return tuple(getattr(out, f) for f in self.fields)


def vision(name, exporter, opset, cls, config, fields, side=32, test_side=None, out_axes=None, batch=True,
           spatial=True, **kw):
    """A spec for a vision model; out_axes maps each output field to its dynamic axes."""
    test_side = test_side or side
    dynamic = {"pixel_values": {a: d for a, d in NCHW.items() if (batch or a != 0) and (spatial or a == 0)}}
    for field, axes in (out_axes or {}).items():
        dynamic[field] = {a: d for a, d in axes.items() if batch or a != 0}
    return Spec(name, f"transformers {cls.__name__}", exporter, opset, lambda: Vision(cls(config()), fields),
                lambda b, s: named(pixel_values=pixels(b, s)), fields,
                export_at=(2 if batch else 1, side), test_at=(3 if batch else 1, test_side), dynamic=dynamic, **kw)


B = {0: "batch"}
TOKENS = {0: "batch", 1: "tokens"}
MAP = dict(NCHW)


def vit_config():
    return tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        image_size=32, patch_size=8)


def deit_config():
    return tf.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=32, patch_size=8, num_labels=10)


def clip_vision_config():
    return tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=32, patch_size=8)


def swin_config():
    return tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4,
                         num_labels=10)


def convnext_config():
    return tf.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)


def resnet_config():
    return tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10)


def resnet_bottleneck_config():
    return tf.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="bottleneck",
                           num_labels=10)


def regnet_config():
    return tf.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, num_labels=10)


def efficientnet_config():
    return tf.EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.3, hidden_dim=320,
                                 num_labels=10)


def mobilenetv2_config():
    return tf.MobileNetV2Config(image_size=32, depth_multiplier=0.25, num_labels=10)


def mobilevit_config():
    return tf.MobileViTConfig(image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
                              num_attention_heads=2, expand_ratio=2.0, num_labels=10)


def segformer_config():
    return tf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                              patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                              decoder_hidden_size=32, num_labels=5)


def detr_config():
    backbone = tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic",
                               out_features=["stage2"])
    return tf.DetrConfig(use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
                         d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10,
                         num_labels=5)


def specs() -> list[Spec]:
    cls_out = {"logits": B}
    vit_out = {"last_hidden_state": TOKENS, "pooler_output": B}
    fixed = "position embeddings fix the image size; spatial axes exported dynamic anyway"
    return [
        vision("vit_legacy_op13", "legacy", 13, tf.ViTModel, vit_config, ["last_hidden_state", "pooler_output"],
               out_axes=vit_out, tags=["fixed_image_size"], notes=fixed),
        vision("vit_dynamo_op18", "dynamo", 18, tf.ViTModel, vit_config, ["last_hidden_state", "pooler_output"],
               out_axes=vit_out, tags=["fixed_image_size"], spatial=False,
               notes="position embeddings fix the image size: torch.export refuses dynamic spatial axes"),
        vision("vit_external_legacy_op17", "legacy", 17, tf.ViTForImageClassification, vit_config, ["logits"],
               out_axes=cls_out, tags=["fixed_image_size"], notes=fixed, external=True),
        vision("deit_legacy_op14", "legacy", 14, tf.DeiTForImageClassificationWithTeacher, deit_config, ["logits"],
               out_axes=cls_out, tags=["fixed_image_size"], notes=fixed),
        vision("clip_vision_legacy_op15", "legacy", 15, tf.CLIPVisionModel, clip_vision_config,
               ["last_hidden_state", "pooler_output"], out_axes=vit_out, tags=["fixed_image_size"], notes=fixed),
        vision("clip_vision_dynamo_op20", "dynamo", 20, tf.CLIPVisionModel, clip_vision_config,
               ["last_hidden_state", "pooler_output"], out_axes=vit_out, tags=["fixed_image_size"], spatial=False,
               notes="position embeddings fix the image size: torch.export refuses dynamic spatial axes"),
        vision("swin_legacy_op17", "legacy", 17, tf.SwinForImageClassification, swin_config, ["logits"],
               out_axes=cls_out, tags=["fixed_image_size"], notes="windows fix the image size in practice"),
        vision("convnext_legacy_op14", "legacy", 14, tf.ConvNextForImageClassification, convnext_config, ["logits"],
               test_side=48, out_axes=cls_out),
        vision("convnext_dynamo_op18", "dynamo", 18, tf.ConvNextForImageClassification, convnext_config, ["logits"],
               test_side=48, out_axes=cls_out),
        vision("resnet_legacy_op11", "legacy", 11, tf.ResNetForImageClassification, resnet_config, ["logits"],
               test_side=48, out_axes=cls_out),
        vision("resnet_batch1_legacy_op13", "legacy", 13, tf.ResNetForImageClassification, resnet_config, ["logits"],
               test_side=48, out_axes=cls_out, batch=False, notes="batch fixed at 1"),
        vision("resnet_ir3_legacy_op9", "legacy", 9, tf.ResNetForImageClassification, resnet_config, ["logits"],
               test_side=48, out_axes=cls_out, ir3=True, notes="opset 9 export converted to opset 8, IR 3"),
        vision("resnet50ish_dynamo_op21", "dynamo", 21, tf.ResNetForImageClassification, resnet_bottleneck_config,
               ["logits"], test_side=48, out_axes=cls_out),
        vision("resnet_fp16_legacy_op17", "legacy", 17, tf.ResNetForImageClassification, resnet_config, ["logits"],
               test_side=48, out_axes=cls_out, fp16=True),
        vision("regnet_legacy_op12", "legacy", 12, tf.RegNetForImageClassification, regnet_config, ["logits"],
               test_side=48, out_axes=cls_out),
        vision("efficientnet_legacy_op13", "legacy", 13, tf.EfficientNetForImageClassification, efficientnet_config,
               ["logits"], test_side=48, out_axes=cls_out),
        vision("mobilenetv2_legacy_op12", "legacy", 12, tf.MobileNetV2ForImageClassification, mobilenetv2_config,
               ["logits"], test_side=32, out_axes=cls_out, notes=TF_PAD),
        vision("mobilenetv2_ir3_legacy_op9", "legacy", 9, tf.MobileNetV2ForImageClassification, mobilenetv2_config,
               ["logits"], test_side=32, out_axes=cls_out, ir3=True, notes="opset 9 export converted to opset 8, IR 3; " + TF_PAD),
        vision("mobilevit_legacy_op13", "legacy", 13, tf.MobileViTForImageClassification, mobilevit_config, ["logits"],
               side=64, out_axes=cls_out),
        vision("segformer_legacy_op13", "legacy", 13, tf.SegformerForSemanticSegmentation, segformer_config, ["logits"],
               side=64, test_side=96, out_axes={"logits": MAP}, tags=["segmentation"]),
        vision("segformer_dynamo_op19", "dynamo", 19, tf.SegformerForSemanticSegmentation, segformer_config,
               ["logits"], side=64, test_side=96, out_axes={"logits": MAP}, tags=["segmentation"]),
        vision("detr_legacy_op17", "legacy", 17, tf.DetrForObjectDetection, detr_config, ["logits", "pred_boxes"],
               side=64, test_side=96, out_axes={"logits": B, "pred_boxes": B}, tags=["detection"],
               notes="transformers ResNet backbone, no timm"),
    ]
