"""Exact parameter counts and the layer shape, from the model built on the meta device (no weights).

PEFT counts come from the trainer's own method objects (`studykit.methods`): the method is applied to the
meta-device model and its parameters are counted, so the estimator and training share one LoRA and one
adapter path.
"""
from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass

import torch
from transformers import AutoConfig

from ..methods import FullFineTuning
from .catalog import FORMULA_TYPES, get_config, is_encoder, model_class
from .timeline import config_key

__all__ = ["Architecture", "architecture", "count_model_parameters", "formula_covers"]


@dataclass(frozen=True)
class Architecture:
    """What the closed-form activation count needs to know about a model's layers."""
    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated: bool            # SwiGLU-style MLP (gate and up projections)
    norm: str              # "layernorm" or "rmsnorm"
    causal: bool           # causal LM (vocab logits) vs encoder with a classification head
    hidden_dropout: float
    attention_dropout: float


def _first(config, names, default=0.0):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _meta_model(config):
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return model_class(config).from_config(config)


@functools.lru_cache(maxsize=128)
def _counts(config_json, method):
    fields = json.loads(config_json)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    net = _meta_model(config)
    base = sum(p.numel() for p in net.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = method.apply(net)
    params = list(net.parameters())
    return dict(base=base, total=sum(p.numel() for p in params),
                trainable=sum(p.numel() for p in params if p.requires_grad))


def formula_covers(model):
    """True when the closed-form activation count knows this architecture (`FORMULA_TYPES`)."""
    return get_config(model).model_type in FORMULA_TYPES


@functools.lru_cache(maxsize=64)
def _architecture(config_json):
    fields = json.loads(config_json)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    net = _meta_model(config)
    heads = config.num_attention_heads
    return Architecture(
        model_type=config.model_type, layers=config.num_hidden_layers, hidden=config.hidden_size,
        heads=heads, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        intermediate=config.intermediate_size, vocab=config.vocab_size,
        gated=any(n.endswith(("gate_proj", "gate_up_proj")) for n, _ in net.named_modules()),
        norm="rmsnorm" if any("RMSNorm" in type(m).__name__ for m in net.modules()) else "layernorm",
        causal=not is_encoder(config),
        hidden_dropout=float(_first(config, ("hidden_dropout_prob", "hidden_dropout", "resid_pdrop"))),
        attention_dropout=float(_first(config, ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"))))


def architecture(model):
    """The layer shape of a shipped name or config (see `Architecture`), for the closed-form count."""
    config = get_config(model)
    if config.model_type not in FORMULA_TYPES:
        raise ValueError(f"the closed-form count knows {', '.join(FORMULA_TYPES)}; {config.model_type!r} is "
                         "counted by the step's timeline (estimate_memory)")
    return _architecture(config_key(config))


def count_model_parameters(model, method=None):
    """Exact counts from the meta-device model with `method` (a `studykit.methods` object) applied:
    `total` (tied weights once), `trainable`, `base` (before the method), `percent_trainable`, `note`."""
    method = method if method is not None else FullFineTuning()
    s = _counts(config_key(get_config(model)), method)
    return dict(s, percent_trainable=100 * s["trainable"] / s["total"], note=describe_method(method))


def describe_method(method):
    """A short label: "full fine-tuning", "LoRA r=16 on query, value", "Houlsby adapters adapter_size=64"."""
    if getattr(method, "name", "full") == "lora":
        return f"LoRA r={method.rank} on {', '.join(method.target_modules)}"
    if getattr(method, "name", "full") == "adapter":
        return f"Houlsby adapters adapter_size={method.adapter_size}"
    return "full fine-tuning"
