"""The study planner: before a grid starts, what each model x dataset x method needs per GPU, which
per-device batch fits which card, and (optionally) how long a run takes on this machine."""
from __future__ import annotations

import functools
import math
import time

from ..data import DataError
from ..methods import HoulsbyAdapters, LoRA, method_for
from ..modeling import ModelUnavailable
from ..runs import dataset_label
from .catalog import GB, GPUS, MODEL_CONFIGS, VALIDATION_CONFIGS, get_config, model_class
from .estimate import estimate_memory
from .trace import traced_activations
from .widgets import gpu_label

__all__ = ["plan_study", "cells_that_do_not_fit", "largest_batch_that_fits", "method_of"]

# What our trainer runs (studykit.training: Accelerate's mixed precision) for each RunConfig.precision, on a GPU.
TRAINER_SCHEMES = {"auto": "autocast", "bf16": "autocast", "fp16": "autocast", "fp32": "fp32"}


def method_of(config):
    """(label, estimate_memory's PEFT keywords) of a RunConfig: full fine-tuning, adapters or LoRA."""
    method = method_for(config)  # the run's own method object: one decision, as in training and results
    if isinstance(method, LoRA):
        targets = tuple(method.target_modules)  # the label names the roles; the count matches each family's names
        return (f"LoRA r={method.rank} on {', '.join(targets)}",
                dict(peft="lora", lora_rank=method.rank, lora_targets=method.target_names))
    if isinstance(method, HoulsbyAdapters):
        return f"adapters m={method.adapter_size}", dict(peft="adapter", adapter_size=method.adapter_size)
    return "full fine-tuning", dict(peft=None)


def _model_config(name, cache_dir=None):
    """A transformers config for a model name: a shipped one, else a local folder or the local HF cache."""
    if name.lower() in {**MODEL_CONFIGS, **VALIDATION_CONFIGS}:
        return get_config(name)
    from transformers import AutoConfig
    from studykit.modeling import resolve_model
    try:
        return AutoConfig.from_pretrained(resolve_model(name, cache_dir or ".cache"), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"no config for {name!r} offline ({str(e).splitlines()[0]}); shipped: "
                         f"{', '.join(MODEL_CONFIGS)}") from None


@functools.lru_cache(maxsize=64)
def _token_lengths(model_name, dataset, max_length, data_dir, cache_dir):
    """Token lengths of the training split (truncated at max_length), and the label count."""
    from transformers import AutoTokenizer
    from studykit.data import get_dataset
    from studykit.modeling import resolve_model
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_name, cache_dir or ".cache"), use_fast=True,
                                              local_files_only=True)  # a plan never waits on the network
    import datasets
    offline = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True  # no silent switch to a Hub copy: a plan never waits on the network
    try:
        ds = get_dataset(dataset, tokenizer.sep_token, data_dir)
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
    texts = ds["train"]["text"]
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    return lengths, ds["train"].features["label"].num_classes


def _lengths_for(cfg):
    """(longest, mean, n_train, labels, where the lengths come from) for one RunConfig."""
    dataset = cfg.dataset if isinstance(cfg.dataset, str) else tuple(cfg.dataset)
    try:
        lengths, labels = _token_lengths(cfg.model_name, dataset, cfg.max_length, cfg.data_dir,
                                         str(getattr(cfg, "cache_dir", "") or "") or None)
    except OSError:  # offline without the tokenizer: the padded maximum, said so
        return None, float("nan"), None, 2, "max_length (no tokenizer/data offline: tokenizer not in the local cache)"
    except ModelUnavailable:  # its error names the model and how to get it; here the plan needs only the fact
        return None, float("nan"), None, 2, f"max_length ({cfg.model_name}'s tokenizer is not available here)"
    except DataError:
        return None, float("nan"), None, 2, f"max_length (the {dataset_label(dataset)} data files are not here)"
    except Exception as e:  # e.g. datasets refusing the Hub offline: its first line, whole
        return None, float("nan"), None, 2, f"max_length ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
    return max(lengths), sum(lengths) / len(lengths), len(lengths), labels, "training data, tokenized"


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def largest_batch_that_fits(capacity_bytes, fixed_bytes, act_at_1, act_per_example, batch_size, overhead=True):
    """The largest per-device batch dividing `batch_size` whose estimated total fits `capacity_bytes`.

    Activations grow linearly with the batch (every kept tensor has a batch dimension), so
    act(b) = act_at_1 + (b - 1) * act_per_example; `fixed_bytes` is weights + gradients + state.
    """
    from .catalog import ALLOCATOR_FRACTION, CUDA_CONTEXT_BYTES
    best = None
    for b in _divisors(batch_size):
        rest = fixed_bytes + act_at_1 + (b - 1) * act_per_example
        total = rest + (CUDA_CONTEXT_BYTES + ALLOCATOR_FRACTION * rest if overhead else 0)
        if total <= capacity_bytes:
            best = b
    return best


def _attention_of(model_config) -> str:
    """The attention our trainer runs for this model, transformers' default: sdpa where the model has it, else
    eager (MPNet's own attention code)."""
    concrete = model_class(model_config)._model_mapping.get(type(model_config), None)  # the Auto class's pick
    return "eager" if concrete is not None and not getattr(concrete, "_supports_sdpa", True) else "sdpa"


def _seconds_per_step(model_config, method_kw, batch, seq_len, steps):
    """Mean wall time of a training micro-step on this machine (after one warm-up step)."""
    import torch
    from .measure import _make_optimizer
    from .trace import apply_method, build_model, training_inputs
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype_amp = torch.bfloat16 if device == "cuda" else None
    net = build_model(model_config, device, torch.float32, _attention_of(model_config), init=False)
    net = apply_method(net, model_config, **{k: v for k, v in method_kw.items() if v is not None}).to(device)
    opt = _make_optimizer("adamw", [p for p in net.parameters() if p.requires_grad])
    inputs = training_inputs(model_config, batch, seq_len, device)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype_amp, enabled=dtype_amp is not None):
            loss = net(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def plan_study(configs, gpus=None, device="cuda", precision=None, measure_time=False, time_steps=3):
    """One row per model x dataset x method of `configs` (RunConfigs, e.g. `profiles.study_configs`).

    Columns: the estimated peak per GPU at the run's per-device batch and the longest batch of its
    data (the longest training sequence after tokenization, padded to a multiple of 8 under mixed
    precision; `max_length` when the tokenizer or data are not available offline, said in `lengths
    from`), the largest `per_device_batch_size` dividing the batch that fits each card of `gpus`
    (default `GPUS`), and with measure_time=True the time per run from a few measured steps here
    (training steps only, at the mean length; no evaluation). device: "cuda" (the GPU the plan is
    for) or "cpu"; precision: a scheme, or None for what our trainer runs (`TRAINER_SCHEMES`).
    """
    import pandas as pd
    gpus = gpus or GPUS
    rows, seen = [], set()
    for cfg in configs:
        label, method_kw = method_of(cfg)
        per_device = cfg.per_device_batch_size or cfg.batch_size
        scheme = precision or (TRAINER_SCHEMES.get(cfg.precision, "autocast") if device == "cuda" else "fp32")
        key = (cfg.model_name, str(cfg.dataset), label, per_device, cfg.batch_size, cfg.max_length, scheme,
               cfg.dropout)
        if key in seen:
            continue
        seen.add(key)
        row = dict(model=cfg.model_name, dataset=cfg.dataset if isinstance(cfg.dataset, str) else "+".join(cfg.dataset),
                   method=label, training_method=cfg.method_name, batch=cfg.batch_size, per_device_batch=per_device, precision=scheme)
        try:
            config = _model_config(cfg.model_name, getattr(cfg, "cache_dir", None))
        except ValueError as e:
            rows.append(dict(row, note=str(e)))
            continue
        longest, mean, n_train, labels, source = _lengths_for(cfg)
        pad = 8 if scheme != "fp32" else 1  # the trainer pads to a multiple of 8 under mixed precision
        seq = cfg.max_length if longest is None else min(cfg.max_length, math.ceil(longest / pad) * pad)
        fields = {**config.to_dict(), "num_labels": labels}
        if cfg.dropout is not None:
            fields.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        config = config.__class__.from_dict(fields)
        attention = _attention_of(config)
        common = dict(precision=scheme, seq_len=seq, device=device, attn_implementation=attention, **method_kw)
        try:
            est = estimate_memory(config, batch_size=per_device, **common)
            one = estimate_memory(config, batch_size=1, overhead=False, **common)
        except ValueError as e:  # e.g. a max_length beyond the model's positions: the run itself says so at start
            rows.append(dict(row, seq_len=seq, note=str(e)))
            continue
        per_example = traced_activations(config, 2, seq, scheme, attention, device, **method_kw)["activations"] \
            - one["activations"]
        fixed = one["total"] - one["activations"]
        row.update({"longest tokens": longest, "mean tokens": round(mean, 1), "lengths from": source,
                    "seq_len": seq, "est_peak_GB": round(est["total"] / GB, 3),
                    "activations_GB": round(est["activations"] / GB, 3)})
        for name, cap in gpus.items():
            best = largest_batch_that_fits(cap, fixed, one["activations"], per_example, cfg.batch_size)
            row[f"max per-device batch, {gpu_label(name, cap)}"] = best if best else "does not fit"
        if measure_time:
            t = _seconds_per_step(config, method_kw, per_device, max(8, round(mean)) if mean == mean else seq,
                                  time_steps)
            steps = math.ceil((n_train or 0) / per_device) * cfg.epochs
            row["s per micro-step here"] = round(t, 3)
            # The whole epoch budget: runs selected on dev (early_stopping_patience) usually stop before it.
            row["est. run time here, full epoch budget (h)"] = round(t * steps / 3600, 2) if n_train else float("nan")
        rows.append(row)
    # Every column, even where no model could be built here (a row's `note` says why): callers select them.
    return pd.DataFrame(rows).reindex(columns=list(dict.fromkeys(
        [c for r in rows for c in r] + ["longest tokens", "mean tokens", "lengths from", "seq_len", "est_peak_GB",
                                        "activations_GB", "note"])))


def cells_that_do_not_fit(configs, device_memory_bytes, device="cuda", precision=None):
    """Warnings, one per model x dataset x method whose estimate exceeds `device_memory_bytes`.

    Each names the estimate, the per-device batch and sequence length it assumes, and the largest
    per_device_batch_size that would fit (gradient accumulation keeps the batch), or that none does.
    """
    plan = plan_study(configs, gpus={"this device": device_memory_bytes}, device=device, precision=precision)
    fit_col = [c for c in plan.columns if c.startswith("max per-device batch")]
    warnings = []
    for _, r in plan.iterrows():
        if "est_peak_GB" not in r or r["est_peak_GB"] != r["est_peak_GB"]:
            continue
        if r["est_peak_GB"] * GB <= device_memory_bytes:
            continue
        best = r[fit_col[0]]
        advice = (f"per_device_batch_size={best} fits (gradient accumulation keeps the batch of {r['batch']})"
                  if best != "does not fit" else "no per-device batch fits: use a smaller max_length, "
                  "activation checkpointing, or a larger GPU")
        warnings.append(f"{r['model']} on {r['dataset']} ({r['method']}): about {r['est_peak_GB']:.1f} GB at "
                        f"per-device batch {r['per_device_batch']} x {r['seq_len']} tokens ({r['precision']}) "
                        f"exceeds this device's {device_memory_bytes / GB:.1f} GB; {advice}")
    return warnings
