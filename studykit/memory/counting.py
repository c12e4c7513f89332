"""Exact parameter counts and the layer shape, from the model built on the meta device (no weights)."""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..adapters import DEFAULT_ADAPTER_SIZE
from .catalog import (ALL_ROLES, FORMULA_TYPES, LORA_DEFAULT_TARGETS, LORA_DEFAULT_TARGETS_DECODER, _is_encoder,
                      _role, get_config, model_class)

__all__ = ["Architecture", "architecture", "count_model_parameters", "formula_covers"]


@dataclass(frozen=True)
class Architecture:
    """What the activation count needs to know about a model's layers."""
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


def _traced_stats(config, peft, lora_rank, lora_targets, adapter_size):
    """Counts for an architecture the closed form does not know: from the traced build (no layer shape)."""
    from .trace import traced_activations
    t = traced_activations(config, 1, 8, "fp32", "eager", "cpu", peft=peft, adapter_size=adapter_size,
                           lora_rank=lora_rank, lora_targets=lora_targets)
    base = traced_activations(config, 1, 8, "fp32", "eager", "cpu")["total"] if peft else t["total"]
    note = {None: "", "lora": f"LoRA r={lora_rank} (peft)", "adapter": f"Houlsby adapters adapter_size={adapter_size}"}[peft]
    return dict(arch=None, base=base, total=t["total"], trainable=t["trainable"], shapes=t["shapes"], note=note)


@functools.lru_cache(maxsize=64)
def _meta_stats(config_json, peft, lora_rank, lora_targets, adapter_size):
    """Build the model on the meta device, optionally with PEFT, and count what we need (cached)."""
    from transformers import AutoConfig
    fields = json.loads(config_json)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    if peft not in (None, "lora", "adapter"):
        raise ValueError(f"unknown peft {peft!r}: use None, 'lora' or 'adapter' (or peft_fraction=...)")
    if config.model_type not in FORMULA_TYPES:
        return _traced_stats(config, peft, lora_rank, lora_targets, adapter_size)
    with torch.device("meta"):
        model = model_class(config).from_config(config)
    base_total = sum(p.numel() for p in model.parameters())
    norm = "rmsnorm" if any("RMSNorm" in type(m).__name__ for m in model.modules()) else "layernorm"
    gated = any(n.endswith(("gate_proj", "gate_up_proj")) for n, _ in model.named_modules())
    heads = config.num_attention_heads
    arch = Architecture(
        model_type=config.model_type, layers=config.num_hidden_layers, hidden=config.hidden_size,
        heads=heads, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        intermediate=config.intermediate_size, vocab=config.vocab_size, gated=gated, norm=norm,
        causal=not _is_encoder(config),
        hidden_dropout=float(_first(config, ("hidden_dropout_prob", "hidden_dropout", "resid_pdrop"))),
        attention_dropout=float(_first(config, ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"))))
    head_names = ("classifier", "score")
    note, roles, norms_trainable, adapter, added, lora_modules = "", ALL_ROLES, True, 0, 0, 0
    if peft is None:
        trainable = [tuple(p.shape) for p in model.parameters()]
    elif peft == "lora":
        targets = lora_targets or LORA_DEFAULT_TARGETS.get(config.model_type, LORA_DEFAULT_TARGETS_DECODER)
        trainable, roles, lora_modules = [], set(), 0
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear) or name.split(".")[0] in head_names + ("lm_head",):
                continue
            if targets == ("all-linear",) or any(name == t or name.endswith("." + t) for t in targets):
                # LoRA: A is r x in, B is out x r, so r·(in + out) parameters per targeted Linear.
                trainable += [(lora_rank, module.in_features), (module.out_features, lora_rank)]
                roles.add(_role(name))
                lora_modules += 1
        added = sum(math.prod(s) for s in trainable)
        if not trainable:
            raise ValueError(f"no Linear module matches lora_targets={targets} in {config.model_type}")
        roles, norms_trainable = frozenset(roles - {None}), False
        note = f"LoRA r={lora_rank} on {', '.join(targets)}"
        for name in head_names:  # the classification head stays trainable (peft's modules_to_save),
            if isinstance(getattr(model, name, None), nn.Module):  # a trained copy beside the frozen original
                head = [tuple(p.shape) for p in getattr(model, name).parameters()]
                trainable += head
                added += sum(math.prod(s) for s in head)
    elif peft == "adapter":
        from studykit import adapters  # the real module of Task 3
        roles, adapter = frozenset(), adapter_size
        if config.model_type in adapters.SUPPORTED_MODEL_TYPES:
            adapters.add_adapters(model, adapter_size=adapter_size)
            trainable = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
            note = f"Houlsby adapters adapter_size={adapter_size} (studykit.adapters.add_adapters)"
        else:  # same placement and size, counted by formula: add_adapters is checked on SUPPORTED_MODEL_TYPES only
            d, m = config.hidden_size, adapter_size
            trainable = [(m, d), (m,), (d, m), (d,)] * (2 * arch.layers)
            trainable += [tuple(mod.weight.shape) for mod in model.modules()
                          if "Norm" in type(mod).__name__ and getattr(mod, "weight", None) is not None]
            note = f"Houlsby adapters adapter_size={adapter_size} (2·L·(2md+m+d), counted; add_adapters: BERT-like encoders)"
    else:
        raise ValueError(f"unknown peft {peft!r}: use None, 'lora' or 'adapter' (or peft_fraction=...)")
    if peft == "adapter":
        from studykit.adapters import adapter_parameter_count
        added = adapter_parameter_count(arch.layers, arch.hidden, adapter_size)
    return dict(arch=arch, base=base_total, total=base_total + added,
                trainable=sum(math.prod(s) for s in trainable), shapes=tuple(trainable), roles=roles,
                norms_trainable=norms_trainable, adapter_size=adapter,
                lora_rank=lora_rank if peft == "lora" else 0,
                lora_per_layer=lora_modules / arch.layers, note=note)


def _stats(model, peft=None, lora_rank=16, lora_targets=None, adapter_size=DEFAULT_ADAPTER_SIZE):
    from .trace import config_key
    targets = tuple(lora_targets) if lora_targets else None
    return _meta_stats(config_key(get_config(model)), peft, lora_rank, targets, adapter_size)


def formula_covers(model):
    """True when the closed-form activation count knows this architecture (`FORMULA_TYPES`)."""
    return get_config(model).model_type in FORMULA_TYPES


def architecture(model):
    """The layer shape of a shipped name or config (see `Architecture`), for the closed-form count."""
    arch = _stats(model)["arch"]
    if arch is None:
        raise ValueError(f"the closed-form count knows {', '.join(FORMULA_TYPES)}; "
                         f"{get_config(model).model_type!r} is counted by tracing (activations_from='trace')")
    return arch


def count_model_parameters(model, peft=None, lora_rank=16, lora_targets=None, adapter_size=DEFAULT_ADAPTER_SIZE):
    """Exact counts from the meta-device model: `total` (tied weights once), `trainable`, `base`."""
    s = _stats(model, peft, lora_rank, lora_targets, adapter_size)
    return dict(total=s["total"], trainable=s["trainable"], base=s["base"],
                percent_trainable=100 * s["trainable"] / s["total"], note=s["note"] or "full fine-tuning")

