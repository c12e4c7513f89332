"""The study planner: before a grid starts, what each model x dataset x method needs per GPU, which
per-device batch fits which card, and (optionally) how long a run takes on this machine."""
from __future__ import annotations

import functools
import math
import time

import datasets
import pandas as pd
import torch
from transformers import AutoConfig, AutoTokenizer

from ..data import DataError, get_dataset
from ..methods import HoulsbyAdapters, LoRA, method_for
from ..modeling import ModelUnavailable, resolve_model
from ..runs import dataset_label
from .catalog import (ALLOCATOR_FRACTION, CUDA_CONTEXT_BYTES, GB, GPUS, MODEL_CONFIGS, TRAINER_SCHEMES,
                      VALIDATION_CONFIGS, default_attention, get_config)
from .counting import describe_method
from .estimate import estimate_memory
from .timeline import build_model, make_optimizer, training_inputs
from .widgets import gpu_label

__all__ = ["plan_study", "cells_that_do_not_fit", "largest_batch_that_fits", "method_of", "model_config"]

# Our trainer's optimizer (studykit.training): AdamW with the fused kernel.
TRAINER_OPTIMIZER = "adamw_fused"


def method_of(config):
    """(label, method object) of a RunConfig: the run's own method (`studykit.methods.method_for`), as training
    applies it; the label names it ("full fine-tuning", "adapters m=64", "LoRA r=8 on query, value")."""
    method = method_for(config)
    if isinstance(method, LoRA):
        return f"LoRA r={method.rank} on {', '.join(method.target_modules)}", method
    if isinstance(method, HoulsbyAdapters):
        return f"adapters m={method.adapter_size}", method
    return describe_method(method), method


def model_config(name, cache_dir=None):
    """A transformers config for a model name: a shipped one (`MODEL_CONFIGS`: no model files needed), else a
    local folder or the local HF cache."""
    if name.lower() in {**MODEL_CONFIGS, **VALIDATION_CONFIGS}:
        return get_config(name)
    try:
        return AutoConfig.from_pretrained(resolve_model(name, cache_dir or ".cache"), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"no config for {name!r} offline ({str(e).splitlines()[0]}); shipped: "
                         f"{', '.join(MODEL_CONFIGS)}") from None


@functools.lru_cache(maxsize=64)
def _token_lengths(model_name, dataset, max_length, data_dir, cache_dir):
    """Token lengths of the training split (truncated at max_length), and the label count."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_name, cache_dir or ".cache"), use_fast=True,
                                              local_files_only=True)  # a plan never waits on the network
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


def largest_batch_that_fits(capacity_bytes, peak_of, batch_size, overhead=True):
    """The largest per-device batch dividing `batch_size` whose peak fits `capacity_bytes`.

    peak_of(b): the step's peak at per-device batch b (bytes, no overhead); with overhead, the card must
    also hold CUDA_CONTEXT_BYTES and ALLOCATOR_FRACTION of the peak. Divisors are tried from the largest
    down; the peak grows with the batch, so the first that fits is the answer.
    """
    for b in sorted(_divisors(batch_size), reverse=True):
        peak = peak_of(b)
        total = peak + (CUDA_CONTEXT_BYTES + ALLOCATOR_FRACTION * peak if overhead else 0)
        if total <= capacity_bytes:
            return b
    return None


def _seconds_per_step(model_config, method, batch, seq_len, steps):
    """Mean wall time of a training micro-step on this machine (after one warm-up step)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype_amp = torch.bfloat16 if device == "cuda" else None
    net = method.apply(build_model(model_config, torch.float32, default_attention(model_config))).to(device)
    opt = make_optimizer("adamw", [p for p in net.parameters() if p.requires_grad])
    inputs = {k: v.to(device) for k, v in training_inputs(model_config, batch, seq_len).items()}
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


def plan_study(configs, gpus=None, device="cuda", scheme=None, measure_time=False, time_steps=3):
    """One row per model x dataset x method of `configs` (RunConfigs, e.g. `profiles.study_configs`).

    Columns: the estimated peak per GPU at the run's per-device batch and the longest batch of its
    data (the longest training sequence after tokenization, padded to a multiple of 8 under mixed
    precision; `max_length` when the tokenizer or data are not available offline, said in `lengths
    from`), the largest `per_device_batch_size` dividing the batch that fits each card of `gpus`
    (default `GPUS`), and with measure_time=True the time per run from a few measured steps here
    (training steps only, at the mean length; no evaluation). device: "cuda" (the GPU the plan is
    for) or "cpu"; scheme: one of `SCHEMES`, or None for what our trainer runs (`TRAINER_SCHEMES`).
    """
    gpus = gpus or GPUS
    rows, seen = [], set()
    for cfg in configs:
        label, method = method_of(cfg)
        per_device = cfg.per_device_batch_size or cfg.batch_size
        run_scheme = scheme or (TRAINER_SCHEMES.get(cfg.precision, "autocast") if device == "cuda" else "fp32")
        key = (cfg.model_name, str(cfg.dataset), label, per_device, cfg.batch_size, cfg.max_length, run_scheme,
               cfg.dropout)
        if key in seen:
            continue
        seen.add(key)
        row = dict(model=cfg.model_name, dataset=cfg.dataset if isinstance(cfg.dataset, str) else "+".join(cfg.dataset),
                   method=label, training_method=cfg.method_name, batch=cfg.batch_size, per_device_batch=per_device,
                   scheme=run_scheme)
        try:
            config = model_config(cfg.model_name, getattr(cfg, "cache_dir", None))
        except ValueError as e:
            rows.append(dict(row, note=str(e)))
            continue
        longest, mean, n_train, labels, source = _lengths_for(cfg)
        pad = 8 if run_scheme != "fp32" else 1  # the trainer pads to a multiple of 8 under mixed precision
        seq = cfg.max_length if longest is None else min(cfg.max_length, math.ceil(longest / pad) * pad)
        fields = {**config.to_dict(), "num_labels": labels}
        if cfg.dropout is not None:
            fields.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
        config = config.__class__.from_dict(fields)
        attention = default_attention(config)
        common = dict(scheme=run_scheme, optimizer=TRAINER_OPTIMIZER, seq_len=seq, device=device,
                      attn_implementation=attention, method=method,
                      grad_clip=bool(getattr(cfg, "max_grad_norm", None)))
        try:
            est = estimate_memory(config, batch_size=per_device, **common)
        except ValueError as e:  # e.g. a max_length beyond the model's positions: the run itself says so at start
            rows.append(dict(row, seq_len=seq, note=str(e)))
            continue

        def peak_of(b):
            return estimate_memory(config, batch_size=b, overhead=False, **common)["total"]
        row.update({"longest tokens": longest, "mean tokens": round(mean, 1), "lengths from": source,
                    "seq_len": seq, "est_peak_GB": round(est["total"] / GB, 3), "peak_phase": est["peak_phase"],
                    "activations_GB": round(est["activations"] / GB, 3)})
        for name, cap in gpus.items():
            best = largest_batch_that_fits(cap, peak_of, cfg.batch_size)
            row[f"max per-device batch, {gpu_label(name, cap)}"] = best if best else "does not fit"
        if measure_time:
            t = _seconds_per_step(config, method, per_device, max(8, round(mean)) if mean == mean else seq,
                                  time_steps)
            steps = math.ceil((n_train or 0) / per_device) * cfg.epochs
            row["s per micro-step here"] = round(t, 3)
            # The whole epoch budget: runs selected on dev (early_stopping_patience) usually stop before it.
            row["est. run time here, full epoch budget (h)"] = round(t * steps / 3600, 2) if n_train else float("nan")
        rows.append(row)
    # Every column, even where no model could be built here (a row's `note` says why): callers select them.
    return pd.DataFrame(rows).reindex(columns=list(dict.fromkeys(
        [c for r in rows for c in r] + ["longest tokens", "mean tokens", "lengths from", "seq_len", "est_peak_GB",
                                        "peak_phase", "activations_GB", "note"])))


def cells_that_do_not_fit(configs, device_memory_bytes, device="cuda", scheme=None):
    """Warnings, one per model x dataset x method whose estimate exceeds `device_memory_bytes`.

    Each names the estimate, the per-device batch and sequence length it assumes, and the largest
    per_device_batch_size that would fit (gradient accumulation keeps the batch), or that none does.
    """
    plan = plan_study(configs, gpus={"this device": device_memory_bytes}, device=device, scheme=scheme)
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
                        f"per-device batch {r['per_device_batch']} x {r['seq_len']} tokens ({r['scheme']}) "
                        f"exceeds this device's {device_memory_bytes / GB:.1f} GB; {advice}")
    return warnings
