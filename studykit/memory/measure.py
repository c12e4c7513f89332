"""Measure one real training step, and check the estimate against it on every validation case."""
from __future__ import annotations

import contextlib
import importlib.util

import torch

from ..adapters import DEFAULT_ADAPTER_SIZE
from .catalog import COMPONENTS, OPTIMIZERS, get_config
from .estimate import estimate_memory
from .trace import apply_method, build_model, saved_tensor_counter, training_inputs

__all__ = ["measure_memory", "validation_cases", "validate_estimates", "ACTIVATION_TOLERANCE", "TOTAL_TOLERANCE",
           "MEASURABLE_PRECISIONS"]

# Schemes a plain training step can run: fp32, pure bf16, and bf16 autocast over fp32 weights (our
# trainer). "mixed" (16-bit weights + a separate fp32 master copy) needs an optimizer wrapper we do not run.
MEASURABLE_PRECISIONS = {"fp32": (torch.float32, None), "bf16": (torch.bfloat16, None),
                         "autocast": (torch.float32, torch.bfloat16)}


def _make_optimizer(name, params):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    if name == "adafactor":
        from transformers.optimization import Adafactor
        return Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=False, warmup_init=False)
    if name == "adam_8bit":
        import bitsandbytes as bnb  # noqa: needs CUDA
        return bnb.optim.AdamW8bit(params, lr=1e-5)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def _state_bytes(opt):
    seen, total = set(), 0
    for state in opt.state.values():
        for v in state.values():
            if torch.is_tensor(v) and v.untyped_storage()._cdata not in seen:
                seen.add(v.untyped_storage()._cdata)
                total += v.untyped_storage().nbytes()
    return total


def measure_memory(model="roberta-base", batch_size=2, seq_len=64, precision="fp32", optimizer="adamw",
                   peft=None, adapter_size=DEFAULT_ADAPTER_SIZE, lora_rank=16, lora_targets=None, attn_implementation="eager",
                   device=None, seed=0):
    """Bytes per component of one real training step (same keys as `estimate_memory`).

    The model is built from its config (random values, no download). Parameters, gradients and
    optimizer state are measured by their sizes after the step; activations are the tensors autograd
    saved for backward during the forward pass (`saved_tensors_hooks`), each storage once, parameters
    left out; under "autocast" they include the 16-bit weight copies autograd keeps. On CPU `overhead`
    is 0 and `total` their sum; on CUDA `total` is `torch.cuda.max_memory_allocated` over a second step
    and `overhead` what it holds beyond the components. precision: one of `MEASURABLE_PRECISIONS`.
    peft: None, "adapter" (Task 3's `add_adapters`) or "lora" (the `peft` library, no dropout).
    """
    if precision not in MEASURABLE_PRECISIONS:
        raise ValueError(f"measure_memory runs precision {', '.join(MEASURABLE_PRECISIONS)}; {precision!r} keeps a "
                         "separate fp32 master copy that a plain step does not make")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = get_config(model)
    dtype, autocast = MEASURABLE_PRECISIONS[precision]
    torch.manual_seed(seed)
    net = build_model(config, device, dtype, attn_implementation, init=False)
    net = apply_method(net, config, peft, adapter_size=adapter_size, lora_rank=lora_rank,
                       lora_targets=lora_targets).to(device)
    params = list(net.parameters())
    trainable = [p for p in params if p.requires_grad]
    opt = _make_optimizer(optimizer, trainable)
    inputs = training_inputs(config, batch_size, seq_len, device)
    cuda = device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        seen, pack = saved_tensor_counter(params)
        amp = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp:
            loss = net(**inputs).loss
        saved = sum(nbytes for nbytes, _ in seen.values())
        seen.clear()
        loss.backward()
        opt.step()
        return saved

    if cuda:
        step()  # the optimizer creates its state in the first step
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    activations = step()
    out = dict(weights=sum(p.nbytes for p in params),
               gradients=sum(p.grad.nbytes for p in trainable if p.grad is not None),
               optimizer_state=_state_bytes(opt), master_weights=0, activations=activations, overhead=0)
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        out["overhead"] = max(0, peak - sum(out.values()))
        out["total"] = max(peak, sum(out.values()))
    else:
        out["total"] = sum(out.values())
    del net, opt
    return out


# The estimate must stay within these relative errors of the CPU measurement (checked in the tests).
# The traced count runs the same model code as the measurement, so it should agree to the byte; the
# tolerance leaves room for kernels that differ between fake and real tensors. Weights, gradients
# and optimizer state are counted exactly (AdamW's step counters aside: 4 bytes per tensor).
ACTIVATION_TOLERANCE = 0.01
TOTAL_TOLERANCE = 0.005


def validation_cases(profile="fast"):
    """Cases (model, PEFT, precision, attention, batch, sequence, optimizer) that run on a CPU.

    `held_out` cases were not looked at while the traced count was written; they are checked last.
    """
    cases = [
        dict(model="roberta-mini", peft=None, batch_size=4, seq_len=128),
        dict(model="roberta-mini", peft="adapter", batch_size=8, seq_len=32),
        dict(model="roberta-mini", peft="lora", batch_size=4, seq_len=64),
        dict(model="roberta-mini", peft=None, batch_size=4, seq_len=64, attn_implementation="sdpa"),
        dict(model="bert-large-slice", peft=None, batch_size=2, seq_len=64),
        dict(model="bert-large-slice", peft=None, batch_size=2, seq_len=64, attn_implementation="sdpa"),
        dict(model="gpt2-mini", peft=None, batch_size=2, seq_len=64),
        dict(model="gpt2-mini", peft="lora", batch_size=2, seq_len=64, attn_implementation="sdpa"),
        dict(model="distilbert-mini", peft=None, batch_size=2, seq_len=64, attn_implementation="sdpa"),
        dict(model="t5-mini", peft=None, batch_size=2, seq_len=64),
        dict(model="t5-mini", peft="lora", batch_size=2, seq_len=64, attn_implementation="sdpa"),
        dict(model="llama-mini", peft=None, batch_size=4, seq_len=128),
        dict(model="llama-mini", peft=None, batch_size=4, seq_len=128, attn_implementation="sdpa"),
        dict(model="llama-mini", peft=None, batch_size=2, seq_len=128, attn_implementation="sdpa", precision="bf16"),
        dict(model="llama-mini", peft=None, batch_size=2, seq_len=64, attn_implementation="sdpa", precision="autocast"),
        dict(model="roberta-mini", peft="adapter", batch_size=4, seq_len=64, precision="autocast"),
        dict(model="llama-mini", peft=None, batch_size=2, seq_len=64, optimizer="sgd_momentum"),
        dict(model="llama-mini", peft=None, batch_size=2, seq_len=64, optimizer="adafactor"),
        # held out: written down before the traced count was run on them, checked last
        dict(model="qwen2-mini", peft=None, batch_size=2, seq_len=96, attn_implementation="sdpa", held_out=True),
        dict(model="qwen2-mini", peft="lora", batch_size=2, seq_len=64, precision="autocast", held_out=True),
        dict(model="distilbert-mini", peft="lora", batch_size=4, seq_len=48, held_out=True),
        dict(model="bert-large-slice", peft="adapter", batch_size=2, seq_len=64, attn_implementation="sdpa",
             precision="autocast", held_out=True),
        dict(model="gpt2-mini", peft=None, batch_size=2, seq_len=80, precision="autocast", held_out=True),
    ]
    if importlib.util.find_spec("peft") is None:  # LoRA is built with the peft library
        cases = [c for c in cases if c["peft"] != "lora"]
    if profile != "fast":
        cases += [dict(model="roberta-base", peft=None, batch_size=4, seq_len=128),
                  dict(model="roberta-base", peft="adapter", batch_size=4, seq_len=128),
                  dict(model="roberta-base", peft="adapter", batch_size=4, seq_len=128, precision="autocast",
                       attn_implementation="sdpa"),
                  dict(model="llama-mini", peft=None, batch_size=8, seq_len=256, attn_implementation="sdpa")]
    return cases


def validate_estimates(cases=None, profile="fast"):
    """Estimated vs measured bytes for each case, as a pandas DataFrame (CPU or GPU as available).

    `estimate_memory` runs with the case's settings and its default traced activations; the column
    `formula_act_err_pct` is the closed-form count's error, where the closed form covers the model.
    """
    import pandas as pd
    from .counting import formula_covers
    rows = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for case in cases or validation_cases(profile):
        c = dict(dict(precision="fp32", optimizer="adamw", attn_implementation="eager", held_out=False), **case)
        measured = measure_memory(c["model"], c["batch_size"], c["seq_len"], c["precision"], c["optimizer"],
                                  peft=c["peft"], attn_implementation=c["attn_implementation"], device=device)
        kw = dict(precision=c["precision"], optimizer=c["optimizer"], batch_size=c["batch_size"],
                  seq_len=c["seq_len"], peft=c["peft"], attn_implementation=c["attn_implementation"],
                  memory_efficient_attention=c["attn_implementation"] != "eager", device=device, overhead=False)
        estimated = estimate_memory(c["model"], **kw)
        formula_err = float("nan")
        if formula_covers(c["model"]) and c["precision"] != "autocast":
            formula = estimate_memory(c["model"], **dict(kw, activations_from="formula"))
            formula_err = 100 * (formula["activations"] / measured["activations"] - 1)
        meas_total = measured["total"] - measured["overhead"]  # the overhead is not modelled per case
        rows.append(dict(
            model=c["model"], method=c["peft"] or "full", precision=c["precision"],
            optimizer=c["optimizer"], attention=c["attn_implementation"], batch=c["batch_size"],
            seq=c["seq_len"], held_out=c["held_out"],
            est_activations_MB=estimated["activations"] / 1e6, meas_activations_MB=measured["activations"] / 1e6,
            activations_err_pct=100 * (estimated["activations"] / measured["activations"] - 1),
            est_total_MB=estimated["total"] / 1e6, meas_total_MB=meas_total / 1e6,
            total_err_pct=100 * (estimated["total"] / meas_total - 1), formula_act_err_pct=formula_err))
    return pd.DataFrame(rows)
