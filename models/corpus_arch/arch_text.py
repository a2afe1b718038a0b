"""Text, speech and decoder models from `transformers` configs, tiny, with random weights.

Each wrapper gives the model an explicit forward signature (the ONNX input names) and returns
a flat tuple (the ONNX outputs), which is how users export HF models by hand. Decoders with
past key values take ``attention_mask`` over past + current tokens and the past keys and values
of both layers as ``[batch, kv_heads, past, head_dim]``; they return the logits and the present
keys and values, ``[batch, kv_heads, past + current, head_dim]``.
"""

from __future__ import annotations

import torch
import transformers as tf

from arch_spec import Spec, audio, axes, named, padded_mask, token_ids

VOCAB = 100
BS = {0: "batch", 1: "sequence"}


class Encoder(torch.nn.Module):
    """(input_ids, attention_mask) -> (last_hidden_state[, pooler_output])."""

    def __init__(self, model, pooled: bool):
        super().__init__()
        self.model, self.pooled = model, pooled

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return (out.last_hidden_state, out.pooler_output) if self.pooled else (out.last_hidden_state,)


class EncoderTyped(Encoder):
    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return (out.last_hidden_state, out.pooler_output) if self.pooled else (out.last_hidden_state,)


class Seq2Seq(torch.nn.Module):
    """(input_ids, attention_mask, decoder_input_ids) -> (logits, encoder_last_hidden_state)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         decoder_input_ids=decoder_input_ids, use_cache=False)
        return out.logits, out.encoder_last_hidden_state


class CausalLM(torch.nn.Module):
    """(input_ids, attention_mask) -> logits, no cache."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return (self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits,)


class CausalLMPast(torch.nn.Module):
    """Two-layer decoder step with past keys and values in, present ones out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, past_key_0, past_value_0, past_key_1, past_value_1):
        cache = tf.DynamicCache(ddp_cache_data=[(past_key_0, past_value_0), (past_key_1, past_value_1)],
                                config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = out.past_key_values
        flat = []
        for layer in range(2):
            flat += [present.layers[layer].keys, present.layers[layer].values]
        return (out.logits, *flat)


def text_inputs(typed: bool = False, pad_left: bool = False):
    def make(batch, length):
        feeds = named(input_ids=token_ids(batch, length, VOCAB),
                      attention_mask=padded_mask(batch, length, pad_left))
        if typed:
            types = torch.zeros(batch, length, dtype=torch.long)
            types[:, length // 2:] = 1
            feeds["token_type_ids"] = types
        return feeds
    return make


def past_inputs(kv_heads: int, head_dim: int):
    """Current length L, past length L + 3 (mask over both, left padding in the past)."""
    def make(batch, length):
        past = length + 3
        feeds = named(input_ids=token_ids(batch, length, VOCAB),
                      attention_mask=padded_mask(batch, past + length, pad_left=True))
        g = torch.Generator().manual_seed(1)
        for layer in range(2):
            feeds[f"past_key_{layer}"] = torch.randn(batch, kv_heads, past, head_dim, generator=g)
            feeds[f"past_value_{layer}"] = torch.randn(batch, kv_heads, past, head_dim, generator=g)
        return feeds
    return make


PAST_NAMES = ["past_key_0", "past_value_0", "past_key_1", "past_value_1"]
PRESENT_NAMES = ["present_key_0", "present_value_0", "present_key_1", "present_value_1"]


def past_dynamic() -> dict:
    dyn = {"input_ids": dict(BS), "attention_mask": {0: "batch", 1: "total"}, "logits": dict(BS)}
    dyn.update(axes(PAST_NAMES, {0: "batch", 2: "past"}))
    dyn.update(axes(PRESENT_NAMES, {0: "batch", 2: "total"}))
    return dyn


def bert_config():
    return tf.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)


def bert_spec(name, exporter, opset, **kw):
    return Spec(name, "transformers BertModel", exporter, opset,
                lambda: EncoderTyped(tf.BertModel(bert_config()), pooled=True),
                text_inputs(typed=True), ["last_hidden_state", "pooler_output"],
                dynamic={**axes(["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"], BS),
                         "pooler_output": {0: "batch"}}, **kw)


def gpt2_config():
    return tf.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2)


def llama_like(name, exporter, opset, cls, config, past=True, **kw):
    cfg = config()
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if past:
        return Spec(name, f"transformers {cls.__name__}", exporter, opset, lambda: CausalLMPast(cls(config())),
                    past_inputs(kv_heads, head_dim), ["logits", *PRESENT_NAMES], export_at=(2, 4), test_at=(3, 5),
                    dynamic=past_dynamic(), tags=["past_kv", "decoder"], **kw)
    return Spec(name, f"transformers {cls.__name__}", exporter, opset, lambda: CausalLM(cls(config())),
                text_inputs(), ["logits"], dynamic=axes(["input_ids", "attention_mask", "logits"], BS),
                tags=["decoder"], **kw)


def llama_config():
    return tf.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def mistral_config():
    return tf.MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                            sliding_window=None)


def phi_config():
    return tf.PhiConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64, partial_rotary_factor=0.5)


def phi3_config():
    return tf.Phi3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)


def qwen2_config():
    return tf.Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


class Whisper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_features, decoder_input_ids):
        # an explicit decoder mask, as generate() passes one (no packed-sequence probe: aten::diff)
        out = self.model(input_features=input_features, decoder_input_ids=decoder_input_ids,
                         decoder_attention_mask=torch.ones_like(decoder_input_ids), use_cache=False)
        return out.logits, out.encoder_last_hidden_state


def whisper_config():
    return tf.WhisperConfig(vocab_size=VOCAB, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, max_source_positions=32, max_target_positions=32,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                            suppress_tokens=None, begin_suppress_tokens=None)


def whisper_inputs(batch, length):
    g = torch.Generator().manual_seed(0)
    return named(input_features=torch.randn(batch, 16, 64, generator=g),
                 decoder_input_ids=token_ids(batch, length, VOCAB))


class Wav2Vec2(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_values):
        return (self.model(input_values=input_values).last_hidden_state,)


def wav2vec2_config():
    # the first convolution's kernel (24 samples) is longer than 16 generated samples
    return tf.Wav2Vec2Config(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, conv_dim=(16, 16, 16), conv_kernel=(24, 3, 3),
                             conv_stride=(8, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                             feat_extract_norm="group", do_stable_layer_norm=False)


def wav2vec2_spec(name, exporter, opset, **kw):
    return Spec(name, "transformers Wav2Vec2Model", exporter, opset, lambda: Wav2Vec2(tf.Wav2Vec2Model(wav2vec2_config())),
                lambda b, n: named(input_values=audio(b, n)), ["last_hidden_state"],
                export_at=(2, 1600), test_at=(3, 2400),
                dynamic={"input_values": {0: "batch", 1: "samples"}, "last_hidden_state": {0: "batch", 1: "frames"}},
                tags=["audio", "kernel_gt_16"], notes="first Conv kernel 24 samples, stride 8", **kw)


def seq2seq_spec(name, exporter, opset, cls, config, **kw):
    return Spec(name, f"transformers {cls.__name__}", exporter, opset, lambda: Seq2Seq(cls(config())),
                lambda b, n: named(input_ids=token_ids(b, n, VOCAB), attention_mask=padded_mask(b, n),
                                   decoder_input_ids=token_ids(b, max(2, n // 2), VOCAB, seed=1)),
                ["logits", "encoder_last_hidden_state"],
                dynamic={**axes(["input_ids", "attention_mask", "encoder_last_hidden_state"], BS),
                         **axes(["decoder_input_ids", "logits"], {0: "batch", 1: "decoder_sequence"})},
                tags=["encoder_decoder"], **kw)


def t5_config():
    return tf.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                       num_heads=4, decoder_start_token_id=0, relative_attention_num_buckets=8)


def bart_config():
    return tf.BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)


def specs() -> list[Spec]:
    enc_dyn = axes(["input_ids", "attention_mask", "last_hidden_state"], BS)
    return [
        bert_spec("bert_legacy_op17", "legacy", 17),
        bert_spec("bert_dynamo_op18", "dynamo", 18),
        bert_spec("bert_neg1_legacy_op12", "legacy", 12, neg1_dims=True,
                  notes="symbolic input dims rewritten as dim_value -1"),
        bert_spec("bert_fp16_legacy_op14", "legacy", 14, fp16=True),
        bert_spec("bert_external_legacy_op16", "legacy", 16, external=True),
        Spec("distilbert_legacy_op14", "transformers DistilBertModel", "legacy", 14,
             lambda: Encoder(tf.DistilBertModel(tf.DistilBertConfig(
                 vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64)), False),
             text_inputs(), ["last_hidden_state"], dynamic=enc_dyn),
        Spec("roberta_legacy_op15", "transformers RobertaModel", "legacy", 15,
             lambda: Encoder(tf.RobertaModel(tf.RobertaConfig(
                 vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=70, pad_token_id=1)), True),
             text_inputs(), ["last_hidden_state", "pooler_output"],
             dynamic={**enc_dyn, "pooler_output": {0: "batch"}}),
        *[Spec(f"albert_{exp}_op{op}", "transformers AlbertModel", exp, op,
               lambda: EncoderTyped(tf.AlbertModel(tf.AlbertConfig(
                   vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=64)), True),
               text_inputs(typed=True), ["last_hidden_state", "pooler_output"],
               dynamic={**axes(["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"], BS),
                        "pooler_output": {0: "batch"}},
               tags=["shared_weights"], notes="one layer's weights shared by both layers")
          for exp, op in (("legacy", 13), ("dynamo", 19))],
        llama_like("gpt2_past_legacy_op14", "legacy", 14, tf.GPT2LMHeadModel, gpt2_config),
        llama_like("gpt2_past_dynamo_op18", "dynamo", 18, tf.GPT2LMHeadModel, gpt2_config),
        llama_like("gpt2_legacy_op11", "legacy", 11, tf.GPT2LMHeadModel, gpt2_config, past=False),
        llama_like("llama_past_legacy_op17", "legacy", 17, tf.LlamaForCausalLM, llama_config),
        llama_like("llama_dynamo_op20", "dynamo", 20, tf.LlamaForCausalLM, llama_config, past=False),
        llama_like("mistral_past_legacy_op18", "legacy", 18, tf.MistralForCausalLM, mistral_config),
        llama_like("phi_legacy_op16", "legacy", 16, tf.PhiForCausalLM, phi_config, past=False),
        llama_like("phi3_past_dynamo_op18", "dynamo", 18, tf.Phi3ForCausalLM, phi3_config),
        llama_like("qwen2_fp16_legacy_op17", "legacy", 17, tf.Qwen2ForCausalLM, qwen2_config, past=False, fp16=True),
        seq2seq_spec("t5_legacy_op14", "legacy", 14, tf.T5ForConditionalGeneration, t5_config),
        seq2seq_spec("bart_legacy_op15", "legacy", 15, tf.BartForConditionalGeneration, bart_config),
        seq2seq_spec("bart_dynamo_op18", "dynamo", 18, tf.BartForConditionalGeneration, bart_config),
        Spec("whisper_legacy_op17", "transformers WhisperForConditionalGeneration", "legacy", 17,
             lambda: Whisper(tf.WhisperForConditionalGeneration(whisper_config())), whisper_inputs,
             ["logits", "encoder_last_hidden_state"], export_at=(2, 4), test_at=(3, 6),
             dynamic={"input_features": {0: "batch"}, "decoder_input_ids": dict(BS), "logits": dict(BS),
                      "encoder_last_hidden_state": {0: "batch"}},
             tags=["audio", "encoder_decoder"], notes="16 mel bins x 64 frames (the encoder fixes the frame count)"),
        wav2vec2_spec("wav2vec2_legacy_op14", "legacy", 14),
        wav2vec2_spec("wav2vec2_dynamo_op18", "dynamo", 18),
        Spec("clip_text_legacy_op14", "transformers CLIPTextModel", "legacy", 14,
             lambda: Encoder(tf.CLIPTextModel(tf.CLIPTextConfig(
                 vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=32, eos_token_id=2)), True),
             text_inputs(), ["last_hidden_state", "pooler_output"],
             dynamic={**enc_dyn, "pooler_output": {0: "batch"}}),
    ]
