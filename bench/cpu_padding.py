"""Padding to a multiple of 8 on CPU: one whole bf16 restaurant run (all-MiniLM-L6-v2, 1 epoch, batch 32) with
the collator padding to multiples of 8 and without, alternated, in this process. Prints the training time of each.

    DATA_DIR=../shared/data python bench/cpu_padding.py

Why it exists: the engine padded to multiples of 8 under any mixed precision (for GPU tensor cores); this
measured what that costs on CPU, where the engine now pads to the longest example of the batch only.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from studykit import training  # noqa: E402
from studykit.config import RunConfig  # noqa: E402


def main() -> None:
    torch.set_num_threads(os.cpu_count())
    original = training.build_loaders
    chosen = {"pad": 8}

    def build_loaders(config, encoded, tokenizer, per_device, pad_multiple, eval_batch_size):
        return original(config, encoded, tokenizer, per_device, chosen["pad"], eval_batch_size)
    training.build_loaders = build_loaders
    work = Path(tempfile.mkdtemp(prefix="studykit-padding-"))
    try:
        for rep in range(2):
            for pad in ((8, None) if rep == 0 else (None, 8)):
                chosen["pad"] = pad
                config = RunConfig("all-minilm-l6-v2", "restaurant_sup", epochs=1, batch_size=32, learning_rate=5e-5,
                                   evals_per_epoch=1, data_dir=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data")),
                                   results_dir=str(work / f"{pad}_{rep}"), num_threads=os.cpu_count(), precision="bf16")
                t = time.perf_counter()
                summary = training.train_run(config)
                print(f"pad to multiple of {pad}: wall {time.perf_counter() - t:.1f} s, training {summary['train_time_s']:.1f} s, "
                      f"{summary['train_tokens_per_s']:.0f} tokens/s, macro-F1 {summary['f1_macro']:.4f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
