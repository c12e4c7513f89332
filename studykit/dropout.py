"""Dropout with a cheaper random mask, for CPU training (`RunConfig.dropout_kernel="int16"`).

Why: profiling one bf16 training step of all-MiniLM-L6-v2 on this project's 2-core CPU put `aten::bernoulli_`
(dropout's mask) at ~21 % of the step, more than any matmul but `mm`: torch draws one random number per element.
Here each 64-bit random draw gives four 16-bit lanes, and an element is kept when its lane clears a threshold,
so the mask costs a quarter of the draws. The distribution is the same Bernoulli up to rounding p to a multiple
of 1/65536 (0.1 -> 0.100006), masks still come from torch's seeded generator (runs stay reproducible), and
kept values are scaled by 1/(1-p) as `nn.Dropout` does. Everything else in the model is untouched.

Two places use it: every `nn.Dropout` module (hidden, embedding, classifier dropout) is swapped for
`Int16MaskDropout`, and the attention-probability dropout, which transformers applies inside its attention
function, goes through `attention_with_int16_dropout`, registered with transformers' `AttentionInterface`
(its documented extension point) as eager attention whose only change is the mask.

Whether it pays depends on the CPU, and its features do not say: on this project's AVX-512 EPYC the int16 mask
is 1.4x (fp32) to 2.4x (bf16) cheaper than torch's, while on an AVX2 Zen 3 a whole fp32 run took 1.43x longer
with it (the eager attention it needs). So "auto" on CPU is decided by measurement (`resolve_dropout_kernel`):
one training step of a small BERT-shaped model with each kernel, alternating, in the run's precision, once per
machine, torch version and precision, cached in the results folder's `.cache/calibration.json`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn
from transformers import AttentionInterface, BertConfig, BertForSequenceClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from .hardware import cpu_name
from .runs import write_json_atomic

__all__ = ["ATTENTION_NAME", "int16_keep_mask", "int16_dropout", "Int16MaskDropout",
           "attention_with_int16_dropout", "use_int16_dropout", "resolve_dropout_kernel", "time_dropout_kernels",
           "CALIBRATION_FILE", "INT16_MARGIN"]

CALIBRATION_FILE = "calibration.json"  # in the results folder's .cache/
# int16 is chosen only when its step is this much faster: within it, torch's own dropout (the model as shipped)
INT16_MARGIN = 0.05

ATTENTION_NAME = "studykit_int16_dropout"
_LANES = 65536


def int16_keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """A bool mask of `shape`, each element True with probability 1 - round(p * 65536) / 65536."""
    n = 1
    for size in shape:
        n *= int(size)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2 ** 63, None)  # all 64 bits
    lanes = words.view(torch.int16)[:n].view(shape)
    return lanes >= (round(p * _LANES) - _LANES // 2)


def int16_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)` with the mask from `int16_keep_mask`."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    # autograd keeps the scaled mask in x's dtype for the backward pass (torch's own dropout keeps a bool
    # mask: 1 byte per element instead of 2-4); a custom autograd function keeping the bool measured no faster
    return x * (int16_keep_mask(x.shape, p, x.device).to(x.dtype) * (1.0 / (1.0 - p)))


class Int16MaskDropout(nn.Dropout):
    """`nn.Dropout` drawing its mask with `int16_keep_mask` (same p, same train/eval behaviour)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int16_dropout(x, self.p, self.training)


def attention_with_int16_dropout(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                                 **kwargs):
    """transformers' eager attention (scores, additive mask, softmax, dropout, weighted sum), dropout by
    `int16_dropout`. Takes the arguments transformers passes to an attention function."""
    if not module.training or dropout == 0.0:  # nothing to draw: torch's fused attention, as the model's default
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=scaling,
                                      **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    weights = int16_dropout(weights, dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _register() -> None:
    AttentionInterface.register(ATTENTION_NAME, attention_with_int16_dropout)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)  # the additive mask eager attention reads


def use_int16_dropout(model: nn.Module) -> nn.Module:
    """Swap the model's dropout for the int16-mask kind, in place: every `nn.Dropout` module (adapters' and
    LoRA's included, so call it after the method is applied) and the attention function."""
    _register()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Int16MaskDropout(child.p, child.inplace))
    if model.config._attn_implementation != ATTENTION_NAME:
        model.set_attn_implementation(ATTENTION_NAME)
    return model


def time_dropout_kernels(precision: str, repeats: int = 3) -> dict:
    """Seconds of one training step (forward and backward) with each kernel ({"torch": s, "int16": s}), the
    fastest of `repeats`, alternating: a BERT-shaped model of MiniLM's width and depth (6 x 384, random
    weights, nothing downloaded), batch 16 x 64 tokens, in `precision` (fp32, or bf16 autocast)."""
    config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                        vocab_size=1000, num_labels=3)
    inputs = dict(input_ids=torch.randint(0, 1000, (16, 64)), attention_mask=torch.ones(16, 64, dtype=torch.long),
                  labels=torch.randint(0, 3, (16,)))
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(0)
        models = {"torch": BertForSequenceClassification(config).train()}
        models["int16"] = use_int16_dropout(BertForSequenceClassification(config).train())
        times = {name: [] for name in models}
        for attempt in range(repeats + 1):  # the first round warms up (allocations, kernel choice)
            for name, model in models.items():
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = model(**inputs).loss
                loss.backward()
                if attempt:
                    times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def _calibrated(precision: str, cache_dir) -> tuple[str, str]:
    """The seconds measured for this machine, read from `cache_dir`'s calibration file; where it has none, this
    process's measurement (taken now if there is none yet) is written there first. The file decides, so every
    process of a grid (workers, `accelerate launch` ranks) reads the same choice for the same results folder."""
    # Not by thread count: a grid's workers (1 thread each) must read the choice its main process hashed with
    key = f"dropout_kernel|{cpu_name()}|torch {torch.__version__}|{precision}"
    path = Path(cache_dir) / CALIBRATION_FILE
    if (path, key) not in _READ:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock"):  # one process measures; the others wait, then read it
                cached = json.loads(path.read_text()) if path.is_file() else {}
                if key not in cached:
                    cached[key] = _MEASURED.get(key) or time_dropout_kernels(precision)
                    write_json_atomic(path, cached)
        except OSError:  # a read-only results folder (a report being read): this process's measurement
            cached = {key: _MEASURED.get(key) or time_dropout_kernels(precision)}
        _MEASURED.setdefault(key, cached[key])
        _READ[path, key] = cached[key]
    seconds = _READ[path, key]
    kernel = "int16" if seconds["int16"] < (1 - INT16_MARGIN) * seconds["torch"] else "torch"
    return kernel, (f"auto: measured on this CPU in {precision}, one training step int16 {seconds['int16']:.3f} s "
                    f"vs torch {seconds['torch']:.3f} s (cached in {path})")


_MEASURED: dict[str, dict] = {}  # this process's measurements, by machine key
_READ: dict[tuple, dict] = {}  # what each results folder's calibration file said, by (file, machine key)


def resolve_dropout_kernel(kernel: str, precision: str, cache_dir) -> tuple[str, str]:
    """The dropout a run uses, and why: an explicit choice stays; `"auto"` is torch's own on a GPU (cheap
    there, and fused into attention) and, on CPU, the kernel whose training step measured faster here in the
    run's `precision` (int16 only beyond `INT16_MARGIN`), measured once and cached under `cache_dir`."""
    if kernel != "auto":
        return kernel, "set explicitly"
    if torch.cuda.is_available():
        return "torch", "auto: GPU (torch's dropout is cheap there)"
    return _calibrated(precision, cache_dir)
