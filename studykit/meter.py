"""Speed and token accounting for the training loop, kept out of the loop itself."""
from __future__ import annotations

import time

import numpy as np
import torch

__all__ = ["SpeedMeter"]


class SpeedMeter:
    """Training time (evaluations excluded), examples and tokens seen, and evaluation speed.

    Counts stay on the device during training (no host sync per step); `summary` sums them over all
    processes with `accelerator.reduce`, so every process must call it.
    """

    def __init__(self, device):
        self.tokens = torch.zeros((), dtype=torch.long, device=device)   # real (non-pad) tokens
        self.computed = torch.zeros((), dtype=torch.long, device=device)  # tokens computed, padding included
        self.samples = torch.zeros((), dtype=torch.long, device=device)
        self.train_time = self.eval_time = 0.0
        self.eval_examples = 0
        self.epoch_times: list[float] = []
        self._t0 = self._t_epoch = None

    def start_epoch(self) -> None:
        self._t_epoch = self._t0 = time.perf_counter()

    def count(self, batch) -> None:
        mask = batch["attention_mask"]
        self.tokens += mask.sum()
        self.computed += mask.numel()
        self.samples += mask.shape[0]

    def start_eval(self) -> None:
        self._t_eval = time.perf_counter()
        self.train_time += self._t_eval - self._t0

    def end_eval(self, examples: int) -> None:
        self._t0 = time.perf_counter()
        self.eval_time += self._t0 - self._t_eval
        self.eval_examples += examples

    def end_epoch(self) -> None:
        now = time.perf_counter()
        self.train_time += now - self._t0
        self.epoch_times.append(now - self._t_epoch)

    def summary(self, accelerator) -> dict:
        tokens, computed, samples = (int(accelerator.reduce(t, "sum").item())
                                     for t in (self.tokens, self.computed, self.samples))
        return {"train_time_s": self.train_time, "epochs_run": len(self.epoch_times),
                "time_per_epoch_s": float(np.mean(self.epoch_times)) if self.epoch_times else None,
                "train_samples_per_s": samples / self.train_time, "train_tokens_per_s": tokens / self.train_time,
                "eval_samples_per_s": self.eval_examples / self.eval_time if self.eval_time else None,
                "train_padding_fraction": 1 - tokens / max(computed, 1)}  # pad share of the tokens computed
