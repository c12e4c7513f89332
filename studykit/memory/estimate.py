"""The estimate: bytes per component for one training step, per GPU."""
from __future__ import annotations

import math

from .catalog import (ADAFACTOR_COUNT_ONLY_RATIO, ADAM8_BLOCK, ADAM8_MIN_SIZE, ALLOCATOR_FRACTION, COMPONENTS,
                      CUDA_CONTEXT_BYTES, DEFAULT_ASSUMPTIONS, OPTIMIZERS, PRESETS, SCHEMES, get_config)
from .counting import count_model_parameters
from .timeline import method_from, step_timeline

__all__ = ["estimate_memory", "bytes_per_parameter", "usable_positions", "scheme_bytes", "assumptions_with"]


def scheme_bytes(name):
    """Bytes per value of a scheme (`SCHEMES`): weights, gradients, master_weights, state, activations."""
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; choose from {', '.join(SCHEMES)}")
    return SCHEMES[name]


def _optimizer_state_bytes(optimizer, n, shapes, state_bytes):
    if optimizer in ("adamw", "adamw_fused"):
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


def bytes_per_parameter(scheme="autocast", optimizer="adamw"):
    """Bytes per trainable parameter by component (for a large model; Adafactor's is an approximation)."""
    p = scheme_bytes(scheme)
    out = dict(weights=p["weights"], gradients=p["gradients"],
               optimizer_state=_optimizer_state_bytes(optimizer, 1, None, p["state"]),
               master_weights=p["master_weights"])
    out["total"] = sum(out.values())
    return out



def assumptions_with(preset, given):
    """The defaults (`DEFAULT_ASSUMPTIONS`), then the preset's, then `given`; unknown names refused."""
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


def _method(model, o):
    """The trainer's method object: `method` if given, else from the peft keywords (one translation)."""
    if o["method"] is not None:
        if o["peft"] is not None:
            raise ValueError("give either method=... or peft=..., not both")
        return o["method"]
    if isinstance(model, (int, float)) and o["peft"] in ("lora", "adapter"):
        raise ValueError("LoRA/adapter sizes need an architecture: pass a shipped name or a config, "
                         "or use peft_fraction=... with a bare parameter count")
    return method_from(o["peft"], o["lora_rank"], o["lora_targets"], o["adapter_size"])


def _sum_accounting(o, base, trainable, total_params, shapes, activations):
    """The report's kind of estimate: every component at its largest, added up (no timeline)."""
    p = scheme_bytes(o["scheme"])
    return dict(weights=total_params * p["weights"], gradients=trainable * p["gradients"],
                optimizer_state=_optimizer_state_bytes(o["optimizer"], trainable, shapes, p["state"]),
                master_weights=trainable * p["master_weights"], activations=activations, temporaries=0)


def _shard(out, zero_stage, num_gpus):
    """ZeRO over num_gpus data-parallel GPUs: stage 1 shards optimizer state and master weights, 2 also
    gradients, 3 also weights (applied to what is live at the peak)."""
    n = int(num_gpus)
    for stage, keys in ((1, ("optimizer_state", "master_weights")), (2, ("gradients",)), (3, ("weights",))):
        if zero_stage >= stage:
            for k in keys:
                out[k] /= n
    return out


def estimate_memory(model, preset=None, seq_len_beyond_positions: bool = False, **assumptions):
    """Bytes per component (`COMPONENTS`) live at the peak of one training step, per GPU, and `total`.

    `total` is the peak of the step's timeline (forward, backward, optimizer step; `step_timeline`) plus
    the GPU overhead; `peak_phase` names the phase that holds it; `sum_of_components` is the accounting the
    estimator used before: weights + all gradients + optimizer state + master weights + the activations live
    at the end of forward (+ overhead), added as if all were alive at once. It is not the peak, and not a
    bound either: it over-counts where activations are freed before gradients appear (full fine-tuning) and
    under-counts where backward's temporaries (the gradient of the logits) come on top (PEFT); the
    validation table shows both.

    model: a parameter count (then activations must be given, e.g. by preset="report": the sum
      accounting, no timeline), a shipped name from `MODEL_CONFIGS`, or a transformers config.
    preset: "report" reproduces the report's accounting; explicit assumptions override it.
    assumptions (defaults in `DEFAULT_ASSUMPTIONS`):
      scheme         one of `SCHEMES` (autocast: our trainer); optimizer one of `OPTIMIZERS`;
      batch_size, seq_len   per-GPU micro-batch;  checkpointing  activation recomputation per layer;
      method         a `studykit.methods` object (FullFineTuning, HoulsbyAdapters, LoRA), as the trainer
                     applies it; or peft=None|"lora"|"adapter" with lora_rank, lora_targets (roles or module
                     names), adapter_size, translated to that object; or peft_fraction=f with a bare count;
      zero_stage, num_gpus  ZeRO-1/2/3 sharding over num_gpus data-parallel GPUs;
      device         "cuda" (CUDA-like kernels, overhead) or "cpu" (what runs here, no overhead);
      overhead       True: CUDA_CONTEXT_BYTES + ALLOCATOR_FRACTION of the peak; False: 0; or bytes;
      activations    None: the timeline; bytes or "weights" (the report's guess): the sum accounting;
      attn_implementation  "eager" or "sdpa"; None: "sdpa" if memory_efficient_attention else "eager";
      grad_clip      clip the gradient norm before the optimizer step.
    Inputs are checked first: counts and sizes are ints >= 1, activations and overhead bytes >= 0, and
    seq_len at most the model's positions unless `seq_len_beyond_positions=True`.
    """
    o = assumptions_with(preset, assumptions)
    _check_inputs(model, o, seq_len_beyond_positions)
    scheme_bytes(o["scheme"])
    if o["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {o['optimizer']!r}; choose from {', '.join(OPTIMIZERS)}")
    if o["zero_stage"] not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {o['zero_stage']!r}")
    how, phase = "sum of components (no timeline)", None
    if isinstance(model, (int, float)) and not isinstance(model, bool):
        base = int(model)
        if o["peft_fraction"] is not None:
            if o["peft"] is not None or o["method"] is not None:
                raise ValueError("give either peft/method=... or peft_fraction=..., not both")
            if not 0 < o["peft_fraction"] < 1:
                raise ValueError("peft_fraction is a fraction of the base parameters, between 0 and 1")
            trainable = int(round(o["peft_fraction"] * base))
            total_params = base + trainable
        else:
            _method(model, o)  # refuses LoRA/adapter sizes without an architecture
            trainable = total_params = base
        if o["activations"] is None:
            raise ValueError("a bare parameter count has no architecture to compute activations from: pass "
                             "activations=<bytes> (or 'weights'), preset='report', or a shipped name/config")
        acts = base * scheme_bytes(o["scheme"])["weights"] if o["activations"] == "weights" else o["activations"]
        out = _sum_accounting(o, base, trainable, total_params, None, acts)
        bound = None
    else:
        if o["peft_fraction"] is not None:
            raise ValueError("peft_fraction goes with a bare parameter count; with an architecture give the method")
        method = _method(model, o)
        attn = o["attn_implementation"] or ("sdpa" if o["memory_efficient_attention"] else "eager")
        if o["activations"] is not None:  # given activations: the sum accounting on the exact counts
            c = count_model_parameters(model, method)
            acts = c["base"] * scheme_bytes(o["scheme"])["weights"] if o["activations"] == "weights" \
                else o["activations"]
            out = _sum_accounting(o, c["base"], c["trainable"], c["total"], None, acts)
            bound = None
        else:
            t = step_timeline(model, o["batch_size"], o["seq_len"], o["scheme"], o["optimizer"], method, attn,
                              o["device"], o["checkpointing"], o["grad_clip"])
            out = {k: t["at_peak"][k] for k in COMPONENTS if k != "overhead"}
            after = t["after"]
            bound = dict(weights=after["optimizer"]["weights"], gradients=after["backward"]["gradients"],
                         optimizer_state=after["optimizer"]["optimizer_state"],
                         master_weights=after["optimizer"]["master_weights"],
                         activations=after["forward"]["activations"], temporaries=0)
            how, phase = t["how"], t["phase"]
    out = _shard(out, o["zero_stage"], o["num_gpus"])
    out = {k: int(round(v)) for k, v in out.items()}
    peak = sum(out.values())

    def overhead(rest):
        if o["overhead"] is True:
            return 0 if o["device"] == "cpu" else int(CUDA_CONTEXT_BYTES + ALLOCATOR_FRACTION * rest)
        return int(o["overhead"] or 0)
    out["overhead"] = overhead(peak)
    out = {k: out[k] for k in COMPONENTS}
    out["total"] = sum(out.values())
    if bound is not None:
        bound = {k: int(round(v)) for k, v in _shard(bound, o["zero_stage"], o["num_gpus"]).items()}
        out["sum_of_components"] = sum(bound.values()) + overhead(sum(bound.values()))
    else:
        out["sum_of_components"] = out["total"]
    out["peak_phase"], out["how"] = phase, how
    return out
