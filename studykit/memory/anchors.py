"""Published GPU figures beside our estimate, and the Q1/Q2 answers under two schemes side by side.

The anchors are peft's `method_comparison` benchmark (huggingface/peft, folder method_comparison/MetaMathQA):
Llama-3.2-3B fine-tuned on MetaMathQA on an NVIDIA L40S, full fine-tuning and LoRA r=32 on q_proj/v_proj.
Their settings (default_training_params.json, and each result file's run_info.train_config): the model
loaded in bf16 and trained in pure bf16 (use_amp false), batch 4, max_seq_length 768, torch's AdamW
(on CUDA its default foreach update), gradient norm clipped at 1.0, attn_implementation None (transformers'
default: SDPA), LoRA alpha 64, no dropout, LoRA weights in fp32 (autocast_adapter_dtype true). Their memory
(utils.py, log_results): `torch.cuda.memory_reserved()` sampled after every training step (the allocator
empties its cache every 10 steps), its mean and 99th percentile over 5000 steps, and the run's
`max_memory_reserved` (evaluation with generation at batch 50 included).

Our estimate is the peak of *allocated* bytes in one step; reserved memory also holds the allocator's
cached free blocks. The gap is a stated assumption (`ALLOCATOR_FRACTION` of the peak, the same the
planner uses), shown beside the bare peak. Their data are bucketed by length (batches of similar
lengths, padded to the longest): 4,198,051 training tokens over 20,000 samples is 209.9 tokens per
sample; we compare their mean with our peak at that mean length, and their 99th percentile with our
peak at an assumed 99th-percentile batch length (`ANCHOR_LONG_BATCH`: twice the mean; their filter keeps
texts up to 1300 characters, and 768 tokens is the hard ceiling).
"""
from __future__ import annotations

import pandas as pd

from ..methods import FullFineTuning, LoRA
from .catalog import ALLOCATOR_FRACTION, GB
from .counting import describe_method
from .estimate import estimate_memory

__all__ = ["PEFT_ANCHORS", "PEFT_SETTINGS", "ANCHOR_MEAN_TOKENS", "ANCHOR_LONG_BATCH", "SIDE_BY_SIDE",
           "compare_with_anchors", "answers_side_by_side"]

_SOURCE = "huggingface/peft method_comparison/MetaMathQA/results/{} (commit 0a179c1e8659ab4f7df0369b9b03943cfe470ff1)"
# Their numbers, typed from the result files' train_info (bytes).
PEFT_ANCHORS = {
    "full": dict(source=_SOURCE.format("full-finetuning--llama-3.2-3B-lr_0.00001.json"),
                 reserved_avg=33_098_872_284, reserved_99th=33_573_390_254, reserved_max=37_241_225_216,
                 trainable=3_212_749_824, total=3_212_749_824),
    "lora": dict(source=_SOURCE.format("lora--llama-3.2-3B-rank32.json"),
                 reserved_avg=11_868_689_976, reserved_99th=17_710_763_212, reserved_max=22_273_851_392,
                 trainable=9_175_040, total=3_221_924_864),
}
PEFT_SETTINGS = dict(model="llama-3.2-3b", scheme="bf16", optimizer="adamw", batch_size=4, grad_clip=True,
                     attn_implementation="sdpa", device="cuda")
PEFT_METHODS = {"full": FullFineTuning(), "lora": LoRA(rank=32, alpha=64, fp32_weights=True)}
ANCHOR_MEAN_TOKENS = 210            # 4,198,051 tokens / 20,000 samples (EOS included), rounded
ANCHOR_LONG_BATCH = 2 * ANCHOR_MEAN_TOKENS  # assumed length of their 99th-percentile batch


def compare_with_anchors(model=None, lengths=None, methods=None):
    """Their reserved memory beside our step peak (allocated, and with the assumed allocator gap).

    One row per (method, their statistic): their GB, the batch length we assume for it, our peak, our
    peak x (1 + ALLOCATOR_FRACTION), and both errors in %. model/lengths/methods override the anchor's
    (for tests on a small model)."""
    settings = dict(PEFT_SETTINGS, **({"model": model} if model else {}))
    lengths = lengths or {"reserved_avg": ANCHOR_MEAN_TOKENS, "reserved_99th": ANCHOR_LONG_BATCH}
    rows = []
    for key, method in (methods or PEFT_METHODS).items():
        for stat, length in lengths.items():
            e = estimate_memory(settings["model"], method=method, seq_len=length, overhead=False,
                                **{k: v for k, v in settings.items() if k != "model"})
            theirs = PEFT_ANCHORS[key][stat]
            ours, with_gap = e["total"], e["total"] * (1 + ALLOCATOR_FRACTION)
            rows.append({"method": describe_method(method), "their statistic": stat.replace("_", " "),
                         "theirs (GB)": theirs / GB, "batch x tokens (ours, assumed)": f"4 x {length}",
                         "ours: step peak allocated (GB)": ours / GB, "peak phase": e["peak_phase"],
                         f"ours + {ALLOCATOR_FRACTION:.0%} allocator (GB)": with_gap / GB,
                         "error, peak (%)": 100 * (ours / theirs - 1),
                         "error, with gap (%)": 100 * (with_gap / theirs - 1),
                         "source": PEFT_ANCHORS[key]["source"]})
    return pd.DataFrame(rows)


# The two schemes Q1/Q2 are answered under: what our trainer runs on a GPU (studykit.training: Accelerate's
# bf16 autocast over fp32 weights, fused AdamW, clipping at 1.0; LoRA weights in the model's fp32), and what
# PEFT users run (peft's method_comparison, its docs' examples: the base model loaded in bf16, torch's AdamW,
# LoRA weights in fp32 by get_peft_model's default).
SIDE_BY_SIDE = {
    "our trainer (autocast, fp32 weights)": dict(scheme="autocast", optimizer="adamw_fused", grad_clip=True,
                                                 fp32_lora=False),
    "PEFT users (bf16 base)": dict(scheme="bf16", optimizer="adamw", grad_clip=True, fp32_lora=True),
}


def answers_side_by_side(model="llama-3.2-3b", batch_size=4, seq_len=512, lora_rank=16, attn_implementation="sdpa"):
    """Q1 (full fine-tuning) and Q2 (LoRA on query/value) per scheme of `SIDE_BY_SIDE`: one row each, with
    the peak, its phase, the components live then, and the per-component sum."""
    rows = []
    for label, s in SIDE_BY_SIDE.items():
        methods = {"Q1 full fine-tuning": FullFineTuning(),
                   "Q2 LoRA": LoRA(rank=lora_rank, alpha=2 * lora_rank, fp32_weights=s["fp32_lora"])}
        for question, method in methods.items():
            e = estimate_memory(model, method=method, scheme=s["scheme"], optimizer=s["optimizer"],
                                grad_clip=s["grad_clip"], batch_size=batch_size, seq_len=seq_len,
                                attn_implementation=attn_implementation)
            rows.append({"question": question, "scheme": label, "method": describe_method(method),
                         "batch x tokens": f"{batch_size} x {seq_len}", "peak phase": e["peak_phase"],
                         **{f"{k} (GB)": e[k] / GB for k in ("weights", "gradients", "optimizer_state",
                                                              "activations", "temporaries", "overhead")},
                         "total: peak + overhead (GB)": e["total"] / GB,
                         "per-component sum (GB)": e["sum_of_components"] / GB})
    return pd.DataFrame(rows)
