"""The peak of one training step: live bytes through forward, backward and the optimizer step.

The estimate is torch's own accounting, `torch.distributed._tools.mem_tracker.MemTracker`, run on the
real transformers model under `FakeTensorMode`: every tensor has its real shape and dtype but no
memory, so a 3B model at 4 x 768 is followed in seconds on a laptop. The tracker keeps the live
bytes of every storage by category (parameters, buffers, gradients, activations, temporaries,
optimizer state) and the snapshot at the moment their sum peaks. We run the step the way a trainer
does: a first step creates the optimizer state, the second is tracked (gradients are None when it
starts: `zero_grad(set_to_none=True)`), forward, backward, optimizer step, in that order.

What it cannot see: memory a kernel allocates internally without a tensor (cuBLAS/cuDNN workspaces),
the CUDA context, and the caching allocator's rounding and fragmentation (reserved vs allocated);
`estimate_memory` adds those as a stated overhead. A fake CUDA device needs a CUDA build of torch, so
`device="cuda"` runs CPU kernels with what changes the bytes made CUDA-like: 1-byte dropout masks,
SDPA without a kept dropout mask, and AdamW's multi-tensor (`foreach`) update, CUDA's default,
whose temporaries are as large as the trainable parameters.

Architectures whose forward reads tensor values (ModernBERT's unpadding, mixture-of-experts routing)
cannot run on fake tensors; they fall back to the same step on real tensors on the CPU when the
model is small enough (`REAL_FALLBACK_BYTES`), and say so in `how`.
"""
from __future__ import annotations

import contextlib
import functools
import json
import warnings

import torch
from torch._subclasses.fake_tensor import (DataDependentOutputException, DynamicOutputShapeException,
                                          FakeTensorMode)
from torch.distributed._tools.mem_tracker import MemTracker
from transformers import AutoConfig
from transformers.optimization import Adafactor

from ..adapters import DEFAULT_ADAPTER_SIZE
from ..methods import FullFineTuning, HoulsbyAdapters, LoRA
from .catalog import OPTIMIZERS, SCHEMES, get_config, is_encoder, model_class

__all__ = ["step_timeline", "step_tracker", "build_model", "training_inputs", "make_optimizer", "method_from", "config_key",
           "PHASES", "REAL_FALLBACK_BYTES", "SCHEME_DTYPES"]

PHASES = ("forward", "backward", "optimizer")
# The dtype of the weights and the autocast dtype, per scheme (`catalog.SCHEMES`). "mixed" keeps 16-bit
# weights for forward and backward and an fp32 master copy that the optimizer updates (apex O2 / ZeRO style).
SCHEME_DTYPES = {"fp32": (torch.float32, None), "bf16": (torch.bfloat16, None),
                 "autocast": (torch.float32, torch.bfloat16), "mixed": (torch.bfloat16, None)}
# The fallback on real tensors runs only for models whose weights, gradients and AdamW state fit this.
REAL_FALLBACK_BYTES = int(4e9)
# MemTracker's categories, named as estimate_memory's components.
_CATEGORIES = {"PARAM": "weights", "BUFFER": "weights", "GRAD": "gradients", "ACT": "activations",
               "TEMP": "temporaries", "OPT": "optimizer_state", "OTH": "master_weights"}


def method_from(peft=None, lora_rank=16, lora_targets=None, adapter_size=DEFAULT_ADAPTER_SIZE):
    """The trainer's method object (`studykit.methods`) for estimate_memory's PEFT keywords."""
    if peft is None:
        return FullFineTuning()
    if peft == "adapter":
        return HoulsbyAdapters(int(adapter_size))
    if peft == "lora":
        targets = tuple(lora_targets) if lora_targets else LoRA.target_modules
        return LoRA(rank=int(lora_rank), alpha=2 * int(lora_rank), target_modules=targets)
    raise ValueError(f"unknown peft {peft!r}: use None (full fine-tuning), 'adapter' or 'lora'")


def build_model(config, dtype, attn_implementation="eager"):
    """The model transformers builds from `config`, in `dtype` on the CPU, in training mode."""
    config = config.__class__.from_dict(config.to_dict())  # a copy we may change
    config._attn_implementation = attn_implementation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = model_class(config).from_config(config, dtype=dtype)
    return net.train()


def training_inputs(config, batch_size, seq_len):
    """Token ids and labels for one training step (a label per sequence for classifiers, else per token)."""
    ids = torch.randint(3, config.vocab_size, (batch_size, seq_len))
    if is_encoder(config):
        return dict(input_ids=ids, labels=torch.randint(0, config.num_labels, (batch_size,)))
    return dict(input_ids=ids, labels=ids.clone())


class _StandInAdam8bit(torch.optim.Optimizer):
    """bitsandbytes' 8-bit AdamW needs CUDA: a stand-in with its state (two uint8 moments and an fp32 scale
    per 256 values; tensors under 4096 values keep fp32 moments) and its in-place update (no temporaries)."""

    def __init__(self, params, lr=1e-5):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    if p.numel() < 4096:
                        state["m"], state["v"] = torch.zeros_like(p, dtype=torch.float32), torch.zeros_like(
                            p, dtype=torch.float32)
                    else:
                        blocks = -(-p.numel() // 256)
                        state["m"] = torch.zeros(p.shape, dtype=torch.uint8)
                        state["v"] = torch.zeros(p.shape, dtype=torch.uint8)
                        state["scales"] = torch.zeros(2 * blocks, dtype=torch.float32)
                p.add_(p.grad, alpha=-group["lr"])


def make_optimizer(name, params, foreach=None):
    """The optimizer `name` (`OPTIMIZERS`) over `params`; foreach=True: AdamW's multi-tensor update."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5, foreach=foreach)
    if name == "adamw_fused":
        return torch.optim.AdamW(params, lr=1e-5, fused=True)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=foreach)
    if name == "adafactor":
        return Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=False, warmup_init=False)
    if name == "adam_8bit":
        return _StandInAdam8bit(params)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


@contextlib.contextmanager
def _cuda_kernels():
    """Make CPU kernels keep what CUDA's keep: 1-byte dropout masks, no dropout mask kept by fused SDPA."""
    F = torch.nn.functional
    dropout, sdpa = F.dropout, F.scaled_dot_product_attention

    def cuda_dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        return torch.native_dropout(input, p, True)[0]

    def fused_sdpa(*args, **kwargs):
        kwargs["dropout_p"] = 0.0  # the fused kernels regenerate their dropout from a seed: no mask kept
        if len(args) > 4:
            args = args[:4] + (0.0,) + args[5:]
        return sdpa(*args, **kwargs)
    F.dropout, F.scaled_dot_product_attention = cuda_dropout, fused_sdpa
    try:
        yield
    finally:
        F.dropout, F.scaled_dot_product_attention = dropout, sdpa


@contextlib.contextmanager
def _fake_friendly():
    """Two things fake tensors refuse, worked around while tracing: initializers that read values
    (`trunc_normal_` of our adapters: values do not change the bytes) become no-ops, and `Module.to`
    (fake parameters cannot be swapped in place) gives modules new parameters instead."""
    trunc, to = torch.nn.init.trunc_normal_, torch.nn.Module.to
    torch.nn.init.trunc_normal_ = lambda tensor, *a, **k: tensor

    def to_new_parameters(self, *args, **kwargs):
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        for m in self.modules():
            for k, p in m._parameters.items():
                if p is not None and ((device is not None and p.device != device)
                                      or (dtype is not None and p.is_floating_point() and p.dtype != dtype)):
                    cast = p.detach().to(device=device, dtype=dtype if p.is_floating_point() else None)
                    m._parameters[k] = torch.nn.Parameter(cast, requires_grad=p.requires_grad)
            for k, b in m._buffers.items():
                if b is not None:
                    m._buffers[k] = b.to(device=device, dtype=dtype if b.is_floating_point() else None)
        return self
    torch.nn.Module.to = to_new_parameters
    try:
        yield
    finally:
        torch.nn.Module.to, torch.nn.init.trunc_normal_ = to, trunc


class _NoHook:
    def remove(self):
        pass


@contextlib.contextmanager
def _frozen_parameters_allowed():
    """MemTracker (torch 2.13) registers gradient hooks on every parameter of a module, which torch refuses
    for frozen ones (every PEFT model has them). A frozen parameter never gets a gradient, so its hooks
    would never fire: their registration becomes a no-op, and nothing the tracker counts is lost."""
    hook, post = torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook

    def register_hook(self, fn):
        return hook(self, fn) if self.requires_grad else _NoHook()

    def register_post_accumulate_grad_hook(self, fn):
        return post(self, fn) if self.requires_grad else _NoHook()
    torch.Tensor.register_hook = register_hook
    torch.Tensor.register_post_accumulate_grad_hook = register_post_accumulate_grad_hook
    try:
        yield
    finally:
        torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook = hook, post


def step_tracker(per_module=False):
    """torch's MemTracker; per_module=False skips its per-module peaks, which scan every module on every op
    (two thirds of the time on roberta-base) and which we do not report: only the global peak is kept.
    That override of `_update_peak_stats` keeps the stock method's second half as it is in torch 2.13
    (its attributes `_curr_mem_snap`, `_peak_mem`, `_peak_mem_snap`); tests/test_memory.py checks that the
    two give the same peak, so a torch that changes them fails there, not silently."""
    if per_module:
        return MemTracker()

    class StepPeakTracker(MemTracker):
        def _update_peak_stats(self, peak_state):
            for dev, dev_snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < dev_snap["Total"]:
                    self._peak_mem[dev] = dev_snap["Total"]
                    self._peak_mem_snap[dev] = dict(dev_snap)
    return StepPeakTracker()


def _run_step(config, batch_size, seq_len, scheme, optimizer, method, attn_implementation, device, checkpointing,
              grad_clip, per_module=False):
    """Build, make the optimizer state, then track one step; returns what `step_timeline` reports."""
    dtype, autocast = SCHEME_DTYPES[scheme]
    net = method.apply(build_model(config, dtype, attn_implementation))
    if checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
    params = list(net.parameters())
    trainable = [p for p in params if p.requires_grad]
    master = []
    if scheme == "mixed":  # fp32 master copies: the optimizer updates these
        master = [p.detach().float().requires_grad_(True) for p in trainable]
    opt = make_optimizer(optimizer, master or trainable, foreach=True if device == "cuda" else None)
    inputs = training_inputs(config, batch_size, seq_len)
    amp = torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
    peaks, at_end = {}, {}

    def phase(name, tracker):
        peaks[name] = _named(tracker.get_tracker_snapshot("peak"))
        at_end[name] = _named(tracker.get_tracker_snapshot("current"))

    def step(tracker):
        with amp:
            loss = net(**inputs).loss
        phase("forward", tracker)
        loss.backward()
        del loss
        phase("backward", tracker)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, 1.0, foreach=True if device == "cuda" else None)
        if master:
            for p, m in zip(trainable, master):  # 16-bit gradients become the fp32 master gradients
                m.grad = p.grad.float()
                p.grad = None
        opt.step()
        if master:
            with torch.no_grad():
                for p, m in zip(trainable, master):
                    p.copy_(m)
        phase("optimizer", tracker)
        opt.zero_grad(set_to_none=True)
        for p in trainable:
            p.grad = None

    with torch.no_grad():  # the first step's only lasting effect: the optimizer state (made from zero gradients)
        for p in master or trainable:
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
    tracker = step_tracker(per_module)
    tracker.track_external(net, opt, *master)
    with _frozen_parameters_allowed(), warnings.catch_warnings(), tracker:
        # its module tracker warns where a module is reached by backward only (tied heads): the bytes are counted
        warnings.filterwarnings("ignore", module="torch.distributed._tools")
        step(tracker)
    counts = dict(total_parameters=sum(p.numel() for p in params), trainable=sum(p.numel() for p in trainable),
                  trainable_shapes=tuple(tuple(p.shape) for p in trainable))
    return peaks, at_end, counts


def _named(snapshot):
    """MemTracker's snapshot of the one device, as {component: bytes}."""
    (dev_snap,) = snapshot.values() if snapshot else ({},)
    out = dict.fromkeys(dict.fromkeys(_CATEGORIES.values()), 0)
    for key, nbytes in dev_snap.items():
        name = getattr(key, "name", str(key))
        if name in _CATEGORIES:
            out[_CATEGORIES[name]] += int(nbytes)
    return out


def _data_dependent(e):
    """True for the errors fake tensors raise when a forward reads tensor values."""
    seen = e
    while seen is not None:
        if isinstance(seen, (DataDependentOutputException, DynamicOutputShapeException)):
            return True
        seen = seen.__cause__ or seen.__context__
    return "Expected inputs of BF16 type" in str(e)  # grouped_mm's meta kernel (MoE experts) refuses fp32


@functools.lru_cache(maxsize=256)
def _timeline(config_json, batch_size, seq_len, scheme, optimizer, method, attn_implementation, device,
              checkpointing, grad_clip):
    fields = json.loads(config_json)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    args = (config, batch_size, seq_len, scheme, optimizer, method, attn_implementation, device, checkpointing,
            grad_clip)
    kernels = _cuda_kernels() if device == "cuda" else contextlib.nullcontext()
    how = "fake tensors (torch MemTracker under FakeTensorMode)"
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), kernels, _fake_friendly():
            peaks, at_end, counts = _run_step(*args)
    except Exception as e:  # noqa: BLE001 -- only data-dependent control flow falls back, the rest re-raises
        if not _data_dependent(e):
            raise
        peaks, at_end, counts = _real_fallback(config, args, kernels_for=device, reason=type(e).__name__)
        how = f"real tensors on the CPU (fallback: {type(e).__name__}: the forward reads tensor values)"
    totals = {k: sum(v.values()) for k, v in peaks.items()}
    peak = totals["optimizer"]
    holder = next(name for name in PHASES if totals[name] == peak)
    return dict(peak=peak, phase=holder, at_peak=peaks["optimizer"], phase_peaks=totals,
                after=at_end, how=how, **counts)


def _real_fallback(config, args, kernels_for, reason):
    """The same tracked step on real tensors (random values) on the CPU, for models small enough."""
    with torch.device("meta"):
        n = sum(p.numel() for p in model_class(config).from_config(config).parameters())
    if 16 * n > REAL_FALLBACK_BYTES:
        raise ValueError(
            f"{config.model_type}'s forward reads tensor values ({reason}: e.g. unpadding or expert routing), so it "
            f"cannot run on fake tensors, and at {n / 1e9:.2f}B parameters a real step on this CPU would need "
            f"{16 * n / 1e9:.0f} GB (over REAL_FALLBACK_BYTES = {REAL_FALLBACK_BYTES / 1e9:.0f} GB): estimate a "
            "smaller configuration of it, or measure on the GPU")
    kernels = _cuda_kernels() if kernels_for == "cuda" else contextlib.nullcontext()
    torch.manual_seed(0)
    with kernels:
        return _run_step(*args)


def config_key(config):
    """A hashable JSON form of a config (for caches)."""
    fields = config.to_dict()
    keep = {k: v for k, v in fields.items() if not k.startswith("_") and k not in ("transformers_version",)}
    return json.dumps(keep, sort_keys=True, default=str)


def step_timeline(model, batch_size=4, seq_len=512, scheme="autocast", optimizer="adamw", method=None,
                  attn_implementation="sdpa", device="cuda", checkpointing=False, grad_clip=False):
    """The peak of live bytes over one training step, the phase that holds it, and what is live then.

    model: a shipped name or a transformers config; scheme: one of `SCHEMES`; optimizer: one of
    `OPTIMIZERS`; method: a `studykit.methods` object (FullFineTuning, HoulsbyAdapters, LoRA), the one
    the trainer applies (default full fine-tuning); device: "cuda" (CUDA-like kernels, see the module
    docstring) or "cpu"; grad_clip: clip the gradient norm before the step, as most trainers do.
    Returns dict(peak, phase, at_peak={component: bytes}, phase_peaks={phase: peak so far},
    after={phase: {component: bytes} at its end}, how, total_parameters, trainable, trainable_shapes).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    method = method if method is not None else FullFineTuning()
    config = get_config(model)
    return _timeline(config_key(config), int(batch_size), int(seq_len), scheme, optimizer, method,
                     attn_implementation or "eager", device, bool(checkpointing), bool(grad_clip))
