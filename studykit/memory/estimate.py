"""The estimate: bytes per component for one training step, per GPU."""
from __future__ import annotations

import math

from .catalog import (ADAFACTOR_COUNT_ONLY_RATIO, ADAM8_BLOCK, ADAM8_MIN_SIZE, ALLOCATOR_FRACTION, COMPONENTS,
                      CUDA_CONTEXT_BYTES, DEFAULT_ASSUMPTIONS, OPTIMIZERS, PRESETS, get_config)
from .counting import _stats
from .formula import _activation_bytes, _precision, activation_terms
from .trace import traced_activations

__all__ = ["estimate_memory", "bytes_per_parameter", "usable_positions"]


def _optimizer_state_bytes(optimizer, n, shapes, state_bytes):
    if optimizer == "adamw":
        return 2 * n * state_bytes
    if optimizer == "sgd_momentum":
        return n * state_bytes
    if optimizer == "adam_8bit":
        if shapes is None:
            return 2 * n * (1 + 4 / ADAM8_BLOCK)
        return sum(2 * math.prod(s) * 4 if math.prod(s) < ADAM8_MIN_SIZE
                   else 2 * (math.prod(s) + 4 * math.ceil(math.prod(s) / ADAM8_BLOCK)) for s in shapes)
    if optimizer == "adafactor":
        if shapes is None:
            return n * ADAFACTOR_COUNT_ONLY_RATIO * state_bytes
        return state_bytes * sum(math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1] if len(s) >= 2 else math.prod(s)
                                 for s in shapes)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")


def bytes_per_parameter(precision="mixed", optimizer="adamw"):
    """Bytes per trainable parameter by component (for a large model; Adafactor's is an approximation)."""
    p = _precision(precision)
    out = dict(weights=p["weights"], gradients=p["gradients"],
               optimizer_state=_optimizer_state_bytes(optimizer, 1, None, p["state"]),
               master_weights=p["master_weights"])
    out["total"] = sum(out.values())
    return out



def _adapters_by_formula(model, peft):
    """Our adapters are checked on BERT-like layers (SUPPORTED_MODEL_TYPES); on others the closed form counts them."""
    from studykit.adapters import SUPPORTED_MODEL_TYPES
    from .catalog import get_config
    from .counting import formula_covers
    return peft == "adapter" and get_config(model).model_type not in SUPPORTED_MODEL_TYPES and formula_covers(model)


def _assumptions(preset, given):
    unknown = set(given) - set(DEFAULT_ASSUMPTIONS)
    if unknown:
        raise TypeError(f"unknown assumption(s) {sorted(unknown)}; known: {', '.join(DEFAULT_ASSUMPTIONS)}")
    if preset not in (None, *PRESETS):
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return {**DEFAULT_ASSUMPTIONS, **PRESETS.get(preset or "standard", {}), **given}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


# RoBERTa-style embeddings start positions after the padding index: of max_position_embeddings (514), this many
# (pad_token_id + 1 = 2) are never used, so 512 tokens fit.
_POSITION_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert")


def usable_positions(config) -> int | None:
    """The longest sequence `config`'s position embeddings cover, or None if it does not say."""
    limit = getattr(config, "max_position_embeddings", None)
    if not _positive_int(limit):
        return None
    if getattr(config, "model_type", None) in _POSITION_OFFSET_TYPES:
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


def _check_inputs(model, o, seq_len_beyond_positions: bool) -> None:
    """Refuse inputs that would give a meaningless estimate, naming the input, its value and what is valid."""
    if isinstance(model, (int, float)) and not isinstance(model, bool):
        if not (math.isfinite(model) and model >= 1 and model == int(model)):
            raise ValueError(f"a parameter count must be a whole number >= 1, got {model!r}")
    for name in ("batch_size", "seq_len", "num_gpus", "lora_rank", "adapter_size"):
        if not _positive_int(o[name]):
            raise ValueError(f"{name} must be an int >= 1, got {o[name]!r}")
    if not (o["activations"] is None or o["activations"] == "weights" or _non_negative(o["activations"])):
        raise ValueError(f"activations must be None (from the architecture), 'weights' or bytes >= 0, "
                         f"got {o['activations']!r}")
    if not (isinstance(o["overhead"], bool) or _non_negative(o["overhead"])):
        raise ValueError(f"overhead must be True (CUDA context + allocator slack), False or bytes >= 0, "
                         f"got {o['overhead']!r}")
    if isinstance(model, (int, float)) or seq_len_beyond_positions:
        return
    config = get_config(model)
    limit = usable_positions(config)
    if limit is not None and o["seq_len"] > limit:
        name = repr(model) if isinstance(model, str) else f"this {config.model_type} model"
        raise ValueError(f"seq_len {o['seq_len']} is longer than {name} has positions for ({limit}); choose seq_len <= {limit}, or pass "
                         "seq_len_beyond_positions=True to estimate it anyway (e.g. for extended positions)")


def estimate_memory(model, preset=None, seq_len_beyond_positions: bool = False, **assumptions):
    """Bytes per component (`COMPONENTS`) and `total`, per GPU, for one training step.

    model: a parameter count (then activations must be given, e.g. by preset="report"), a shipped
      name from `MODEL_CONFIGS`, or a transformers config.
    preset: "report" reproduces the report's accounting; explicit assumptions override it.
    assumptions (defaults in `DEFAULT_ASSUMPTIONS`):
      precision      one of `PRECISIONS`; optimizer one of `OPTIMIZERS`;
      batch_size, seq_len   per-GPU micro-batch;
      checkpointing  full activation recomputation per layer;
      memory_efficient_attention  flash/memory-efficient SDPA (no s² term) vs eager attention;
      peft           None (full fine-tuning), "lora" (lora_rank, lora_targets: module names or
                     ("all-linear",)) or "adapter" (adapter_size); or peft_fraction=f: f x N
                     trainable parameters added to the frozen model, as the report assumes;
      zero_stage, num_gpus  ZeRO-1 shards optimizer state and master weights, ZeRO-2 also gradients,
                     ZeRO-3 also weights, over num_gpus data-parallel GPUs;
      device         "cuda" (1-byte dropout masks, CUDA overhead) or "cpu" (float masks, no overhead);
      overhead       True: CUDA_CONTEXT_BYTES + ALLOCATOR_FRACTION of the rest; False: 0; or bytes;
      activations    bytes, or "weights" (as large as the weights, the report's guess), or None: from
                     the architecture, by `activations_from`:
      activations_from  "trace" (default): the real model run on fake tensors (`traced_activations`),
                     exact for any architecture; "formula": the closed-form count (`activation_terms`),
                     also used for adapters outside SUPPORTED_MODEL_TYPES (BERT-like encoders);
      attn_implementation  "eager" or "sdpa" for the traced count; None: "sdpa" if
                     memory_efficient_attention else "eager".
    Under precision="autocast" the traced activations include the 16-bit weight copies kept for backward.
    Inputs are checked first: counts and sizes are ints >= 1, activations and overhead bytes >= 0, and
    seq_len at most the model's positions unless `seq_len_beyond_positions=True`.
    """
    o = _assumptions(preset, assumptions)
    _check_inputs(model, o, seq_len_beyond_positions)
    p = _precision(o["precision"])
    if o["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {o['optimizer']!r}; choose from {', '.join(OPTIMIZERS)}")
    if o["zero_stage"] not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {o['zero_stage']!r}")
    peft = o["peft"]
    if o["peft_fraction"] is not None:
        if peft is not None:
            raise ValueError("give either peft=... or peft_fraction=..., not both")
        if not 0 < o["peft_fraction"] < 1:
            raise ValueError("peft_fraction is a fraction of the base parameters, between 0 and 1")
        peft = "fraction"

    st = None
    if isinstance(model, (int, float)) and not isinstance(model, bool):
        base = int(model)
        if peft in ("lora", "adapter"):
            raise ValueError("LoRA/adapter sizes need an architecture: pass a shipped name or a config, "
                             "or use peft_fraction=... with a bare parameter count")
        shapes = None
    else:
        st = _stats(model, None if peft == "fraction" else peft, o["lora_rank"], o["lora_targets"],
                    o["adapter_size"])
        base = st["base"]
        shapes = st["shapes"] if peft != "fraction" else None
    if peft == "fraction":
        trainable = int(round(o["peft_fraction"] * base))
        total_params = base + trainable
    elif st is not None:
        trainable, total_params = st["trainable"], st["total"]
    else:
        trainable = total_params = base

    out = dict(
        weights=total_params * p["weights"],
        gradients=trainable * p["gradients"],
        optimizer_state=_optimizer_state_bytes(o["optimizer"], trainable, shapes, p["state"]),
        master_weights=trainable * p["master_weights"])

    if o["activations"] is not None:
        out["activations"] = base * p["weights"] if o["activations"] == "weights" else o["activations"]
    elif st is None:
        raise ValueError("a bare parameter count has no architecture to compute activations from: pass "
                         "activations=<bytes> (or 'weights'), preset='report', or a shipped name/config")
    elif o["activations_from"] == "trace" and not _adapters_by_formula(model, peft):
        attn = o["attn_implementation"] or ("sdpa" if o["memory_efficient_attention"] else "eager")
        method = {} if peft == "fraction" else dict(  # fraction: layers as in full fine-tuning
            peft=peft, lora_rank=o["lora_rank"], lora_targets=o["lora_targets"], adapter_size=o["adapter_size"])
        out["activations"] = traced_activations(model, o["batch_size"], o["seq_len"], o["precision"], attn,
                                                o["device"], checkpointing=o["checkpointing"], **method)["activations"]
    elif o["activations_from"] in ("formula", "trace"):
        stats = st if peft != "fraction" else _stats(model)  # fraction: layers as in full fine-tuning
        terms = activation_terms(model, o["batch_size"], o["seq_len"], o["precision"],
                                 o["memory_efficient_attention"], o["device"], _stats_=stats)
        out["activations"] = _activation_bytes(terms, o["checkpointing"])
    else:
        raise ValueError(f"activations_from must be 'trace' or 'formula', got {o['activations_from']!r}")

    n, z = int(o["num_gpus"]), o["zero_stage"]
    if z >= 1:
        out["optimizer_state"] /= n
        out["master_weights"] /= n
    if z >= 2:
        out["gradients"] /= n
    if z >= 3:
        out["weights"] /= n
    out = {k: int(round(v)) for k, v in out.items()}
    if o["overhead"] is True:
        rest = sum(out.values())
        out["overhead"] = 0 if o["device"] == "cpu" else int(CUDA_CONTEXT_BYTES + ALLOCATOR_FRACTION * rest)
    else:
        out["overhead"] = int(o["overhead"] or 0)
    out = {k: out[k] for k in COMPONENTS}
    out["total"] = sum(out.values())
    return out

