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

Where it pays: in bf16 on CPU a training step was 1.27x faster with it (AVX-512 EPYC, native bf16). In fp32 it
is not worth it: a whole fp32 run took 1.43x longer with it on an AVX2 Zen 3 (issue 26), and on the AVX-512 EPYC
a per-machine timing of one step could not tell the two kernels apart (it chose int16 in one results folder and
torch in the next, 2026-12-04). So "auto" on CPU is int16 for bf16 runs and torch's own for fp32 runs
(`resolve_dropout_kernel`): decided from the precision, the same in every process, nothing measured or written.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

__all__ = ["ATTENTION_NAME", "int16_keep_mask", "int16_dropout", "Int16MaskDropout",
           "attention_with_int16_dropout", "use_int16_dropout", "resolve_dropout_kernel"]

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


def resolve_dropout_kernel(kernel: str, precision: str) -> tuple[str, str]:
    """The dropout a run uses, and why: an explicit choice stays; `"auto"` is torch's own on a GPU (cheap
    there, and fused into attention) and in fp32 on CPU, and the int16 kind for bf16 on CPU, the one case where
    it measured clearly faster (module docstring)."""
    if kernel != "auto":
        return kernel, "set explicitly"
    if torch.cuda.is_available():
        return "torch", "auto: GPU (torch's dropout is cheap there)"
    if precision == "bf16":
        return "int16", "auto: bf16 on CPU (torch's bf16 mask draws one random number per element; int16 1.27x per step)"
    return "torch", "auto: fp32 on CPU (int16 was 1.43x slower on an AVX2 Zen 3, within noise on AVX-512)"
