"""The true peak of one real training step, measured by a different mechanism than the estimate's.

The estimate (timeline.py) follows tensors at the dispatcher: torch's MemTracker sees each op's outputs
and their storages die with their last reference. The measurement here never looks at tensors: it
asks the allocator. On the CPU, `torch.profiler.profile(profile_memory=True)` records every
allocation and free that c10's CPU allocator makes (kernels' internal buffers too), with its size and
time; replayed in time order, their running sum plus the bytes live when the step started (the
parameters, buffers and optimizer state, counted by storage) is the live memory at every moment, and
its maximum is the step's peak. On a GPU the allocator keeps the count itself:
`torch.cuda.max_memory_allocated`. Both run on real tensors (random values, no download).
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from ..adapters import DEFAULT_ADAPTER_SIZE
from ..methods import FullFineTuning, HoulsbyAdapters, LoRA, method_for
from ..pipeline import label_names
from .catalog import TRAINER_SCHEMES, default_attention, get_config
from .counting import describe_method
from .estimate import estimate_memory
from .timeline import SCHEME_DTYPES, build_model, make_optimizer, method_from, training_inputs

__all__ = ["measure_memory", "measured_peak", "validation_cases", "validate_estimates", "validate_on_study",
           "TOTAL_TOLERANCE", "MEASURABLE_SCHEMES"]

# Schemes a plain training step runs: fp32, pure bf16, and bf16 autocast over fp32 weights (our trainer).
# "mixed" (16-bit weights + a separate fp32 master copy) needs an optimizer wrapper we do not run.
MEASURABLE_SCHEMES = ("fp32", "bf16", "autocast")
# Every validation case: the estimated peak within this relative error of the measured one.
TOTAL_TOLERANCE = 0.03


def _live_bytes(tensors):
    """Bytes of the distinct storages behind `tensors`."""
    seen = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[(st.device.type, st.data_ptr())] = st.nbytes()
    return sum(seen.values())


def _state_tensors(opt):
    return [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v) and v.dim() > 0]


def _replayed_peak(prof):
    """The largest running sum of the CPU allocator's allocations (+) and frees (-), in time order."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
              and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())  # a stable sort: events of the same instant keep their order
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak, live


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 to /dev/null for the moment: what C++ libraries print there, Python's sys.stderr aside."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def measured_peak(model, batch_size=2, seq_len=64, scheme="fp32", optimizer="adamw", method=None,
                  attn_implementation="eager", device=None, seed=0, foreach=None, checkpointing=False):
    """The true peak of live bytes in the second of two real training steps, and what it starts from.

    Returns dict(peak, start, weights, gradients, optimizer_state, after, how): `start` is what is live
    when the step begins (weights, buffers, optimizer state), `after` the bytes the allocator still held
    at its end beyond `start` (0 once the step frees what it made). foreach=True: AdamW's multi-tensor update
    (CUDA's default); checkpointing: transformers' gradient checkpointing (recomputation in backward).
    """
    if scheme not in MEASURABLE_SCHEMES:
        raise ValueError(f"a plain step runs scheme {', '.join(MEASURABLE_SCHEMES)}; {scheme!r} keeps a separate "
                         "fp32 master copy that a plain step does not make")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = get_config(model)
    dtype, autocast = SCHEME_DTYPES[scheme]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = (method or method_from()).apply(build_model(config, dtype, attn_implementation)).to(device)
    if checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
    params = list(net.parameters())
    trainable = [p for p in params if p.requires_grad]
    opt = make_optimizer(optimizer, trainable, foreach=foreach)
    inputs = {k: v.to(device) for k, v in training_inputs(config, batch_size, seq_len).items()}
    amp = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    grads = {}

    def step():
        with amp:
            loss = net(**inputs).loss
        loss.backward()
        del loss
        grads["bytes"] = _live_bytes([p.grad for p in trainable if p.grad is not None])
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # creates the optimizer state
    start = _live_bytes([*params, *net.buffers(), *_state_tensors(opt)])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak, after = torch.cuda.max_memory_allocated(device) - base + start, torch.cuda.memory_allocated(device) - base
        how = "torch.cuda.max_memory_allocated over the second step"
    else:
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _native_stderr_silenced():  # kineto prints "USDT ... profiler_start" from C++ into reports
            prof.start()
        try:
            step()
        finally:
            with _native_stderr_silenced():
                prof.stop()
        rise, after = _replayed_peak(prof)
        peak = start + rise
        how = "CPU allocator events (torch.profiler, profile_memory=True) replayed in time order"
    out = dict(peak=int(peak), start=int(start), weights=_live_bytes([*params, *net.buffers()]),
               gradients=grads["bytes"], optimizer_state=_live_bytes(_state_tensors(opt)), after=int(after), how=how)
    return out


def measure_memory(model="roberta-base", batch_size=2, seq_len=64, scheme="fp32", optimizer="adamw", peft=None,
                   adapter_size=DEFAULT_ADAPTER_SIZE, lora_rank=16, lora_targets=None, attn_implementation="eager",
                   device=None, seed=0, method=None):
    """One real training step, in `estimate_memory`'s keys: `total` is its measured peak (`measured_peak`);
    weights, gradients (all of them, after backward) and optimizer_state are their sizes; `activations` is
    the rest of the peak beyond those three (activations and temporaries live then). Numbers only (callers
    divide the whole row); how it was measured: `measured_peak`'s `how`."""
    method = method or method_from(peft, lora_rank, lora_targets, adapter_size)
    m = measured_peak(model, batch_size, seq_len, scheme, optimizer, method, attn_implementation, device, seed)
    rest = max(0, m["peak"] - m["weights"] - m["gradients"] - m["optimizer_state"])
    return dict(weights=m["weights"], gradients=m["gradients"], optimizer_state=m["optimizer_state"],
                master_weights=0, activations=rest, temporaries=0, overhead=0, total=m["peak"])


def validation_cases(profile="fast"):
    """The cases the estimate is checked on: 10 architectures x {full, adapters where they apply, LoRA} x
    {eager, SDPA} x schemes and optimizers. Those marked held_out were written down before the estimator first
    ran on them and were never used to change it."""
    full, adapters, lora = FullFineTuning(), HoulsbyAdapters(16), LoRA(rank=8, alpha=16)
    fused = {"gpt2-mini": LoRA(rank=8, alpha=16, target_modules=("c_attn",)),
             "modernbert-mini": LoRA(rank=8, alpha=16, target_modules=("Wqkv",))}
    cases = []
    for model, methods in (("bert-large-slice", (full, adapters, lora)), ("roberta-mini", (full, adapters, lora)),
                           ("distilbert-mini", (full, lora)), ("gpt2-mini", (full, fused["gpt2-mini"])),
                           ("llama-mini", (full, lora)), ("t5-mini", (full, lora)),
                           ("modernbert-mini", (full, fused["modernbert-mini"]))):
        for method in methods:
            for attn in ("eager", "sdpa"):
                cases.append(dict(model=model, method=method, attn_implementation=attn))
    # AdamW's foreach update (CUDA's default) and gradient checkpointing: llama-mini has no dropout, so the
    # estimate's CUDA-like kernels (device="cuda", which selects foreach) change nothing else there
    cases += [dict(model="llama-mini", method=full, attn_implementation="sdpa", foreach=True),
              dict(model="llama-mini", method=lora, attn_implementation="sdpa", checkpointing=True),
              dict(model="roberta-mini", method=full, attn_implementation="eager", checkpointing=True)]
    cases += [dict(model="llama-mini", method=full, attn_implementation="sdpa", scheme="bf16"),
              dict(model="llama-mini", method=lora, attn_implementation="sdpa", scheme="autocast"),
              dict(model="roberta-mini", method=adapters, attn_implementation="sdpa", scheme="autocast"),
              dict(model="llama-mini", method=full, attn_implementation="eager", optimizer="sgd_momentum"),
              dict(model="llama-mini", method=full, attn_implementation="eager", optimizer="adafactor")]
    held_out = [dict(model="qwen2-mini", method=full, attn_implementation="sdpa", seq_len=96),
                dict(model="qwen2-mini", method=lora, attn_implementation="eager", scheme="autocast"),
                dict(model="mpnet-mini", method=full, attn_implementation="eager"),
                dict(model="mpnet-mini", method=lora, attn_implementation="eager"),
                dict(model="mpnet-mini", method=adapters, attn_implementation="eager"),
                dict(model="bart-mini", method=full, attn_implementation="sdpa"),
                dict(model="bart-mini", method=lora, attn_implementation="eager", scheme="autocast"),
                dict(model="distilbert-mini", method=lora, attn_implementation="sdpa", batch_size=4, seq_len=48)]
    cases += [dict(c, held_out=True) for c in held_out]
    if profile != "fast":
        cases += [dict(model="roberta-base", method=full, attn_implementation="sdpa", batch_size=4, seq_len=128)]
    return [dict(dict(batch_size=4, seq_len=64, scheme="fp32", optimizer="adamw", held_out=False, foreach=False,
                      checkpointing=False), **c) for c in cases]


def validate_estimates(cases=None, profile="fast"):
    """Estimate vs measured peak for each case (default `validation_cases(profile)`), on the CPU: a DataFrame."""
    rows = []
    for c in cases or validation_cases(profile):
        c = dict(dict(foreach=False, checkpointing=False), **c)
        common = dict(batch_size=c["batch_size"], seq_len=c["seq_len"], optimizer=c["optimizer"],
                      checkpointing=c["checkpointing"])
        m = measured_peak(c["model"], scheme=c["scheme"], method=c["method"],
                          attn_implementation=c["attn_implementation"], device="cpu",
                          foreach=True if c["foreach"] else None, **common)
        e = estimate_memory(c["model"], scheme=c["scheme"], method=c["method"],
                            attn_implementation=c["attn_implementation"], device="cuda" if c["foreach"] else "cpu",
                            overhead=False, **common)
        rows.append(dict(model=c["model"], method=describe_method(c["method"]), scheme=c["scheme"],
                         optimizer=c["optimizer"] + (" (foreach)" if c["foreach"] else ""),
                         checkpointing=c["checkpointing"], attention=c["attn_implementation"], batch=c["batch_size"],
                         seq=c["seq_len"], held_out=c["held_out"], peak_phase=e["peak_phase"],
                         estimated_by=e["how"].split(" (")[0], est_peak_MB=e["total"] / 1e6,
                         measured_peak_MB=m["peak"] / 1e6, err_pct=100 * (e["total"] / m["peak"] - 1),
                         sum_of_components_MB=e["sum_of_components"] / 1e6,
                         sum_err_pct=100 * (e["sum_of_components"] / m["peak"] - 1)))
    return pd.DataFrame(rows)


def validate_on_study(configs, dataset=None):
    """`validate_estimates` on the models a study trains: one case per model x training method of `configs`
    (RunConfigs), with the first dataset's label count (or `dataset`'s), at the longest batch a run can meet
    (its per-device batch x max_length, no padding), in the scheme its precision trains in, with the attention
    loading gives the model (the engine sets none): SDPA where the class supports it (BERT), else eager (MPNet).
    Runs whose precision is "auto" or fp16 are left out: their scheme depends on the machine.
    Each model needs a shipped config (`MODEL_CONFIGS`)."""
    cases, names = {}, {}
    for c in configs:
        dataset = dataset or c.dataset
        if c.dataset != dataset or c.precision not in ("bf16", "fp32"):  # pinned: the same scheme on any machine
            continue
        method = method_for(c)
        config = get_config(c.model_name)
        config.num_labels = len(label_names(c))
        key = (c.model_name, describe_method(method))
        if key not in cases:
            names[key] = c.model_name
            cases[key] = dict(model=config, method=method, batch_size=c.per_device_batch_size or c.batch_size,
                              seq_len=c.max_length, scheme=TRAINER_SCHEMES[c.precision], optimizer="adamw",
                              attn_implementation=default_attention(config), held_out=False)
    if not cases:
        raise ValueError("no run of these configs has a pinned precision (bf16 or fp32) on the dataset "
                         f"{dataset!r}; pass configs of a profile that pins it, or another dataset")
    return validate_estimates(list(cases.values())).assign(model=list(names.values()), dataset=dataset)
