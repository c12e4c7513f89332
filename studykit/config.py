"""`RunConfig`: everything that defines one fine-tuning run, its validation and its hash.

Each field carries a one-line `help` in its metadata (`python train.py --help` prints them) and says how
it enters the configuration hash: `hash="always"` (default), `hash="never"` (seed, paths, speed knobs),
`hash="unless_default"` (fields added later: left out at their default, so older runs keep their hash), or
`hash="resolved"` (an "auto" field added later: it enters as `resolved_<name>` says, left out where that is
its `legacy` value, what every run before the field did).
`precision` is a "resolved" field with no legacy value: it always enters, as the precision it runs in
(`"auto"` as what it picks on this machine), so a run's folder says what precision it ran in; profiles with
committed runs pin theirs, so the machine that renders a report never changes which folders it reads.
`dropout_kernel` enters only where it is not torch's own dropout, which every run before the field had.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import DATASET_NAMES, DataError, data_fingerprint
from .dropout import resolve_dropout_kernel
from .hardware import PRECISIONS, resolve_precision
from .runs import RunFolder

__all__ = ["RunConfig", "NotRunnableHere", "METHODS", "MIN_MAX_LENGTH", "data_fingerprint"]

DROPOUT_KERNELS = ("auto", "torch", "int16")
METHODS = ("full", "adapter", "lora")
MIN_MAX_LENGTH = 8  # [CLS] text [SEP] text [SEP] needs a few tokens; fewer is certainly a typo
MAX_SEED = 2 ** 32  # numpy's seeds (set_seed seeds numpy, random and torch) are below this
_TASK_NAME = re.compile(r"[A-Za-z0-9_-]+")


class NotRunnableHere(ValueError):
    """This machine cannot run the config as asked (e.g. fp16 without a GPU); another machine may: a grid
    records it as a failure of the environment, retried by the next grid."""


def _field(default, help: str, hash: str = "always", legacy=None):
    return dataclasses.field(default=default, metadata={"help": help, "hash": hash, "legacy": legacy})


@dataclass
class RunConfig:
    """Everything that defines one fine-tuning run. Defaults are the report's restaurant/acl setting."""
    model_name: str = dataclasses.field(metadata={
        "help": "hub id, local folder, or alias (tiny-bert, tiny-roberta, all-minilm-l6-v2)", "hash": "always"})
    dataset: str = dataclasses.field(metadata={
        "help": "dataset name, e.g. restaurant_sup (see studykit.data.DATASET_NAMES)", "hash": "always"})
    seed: int = _field(1, "random seed (runs of one configuration differ only here)", "never")
    epochs: int = _field(4, "passes over the training split")
    batch_size: int = _field(64, "global batch: processes x per-device batch x accumulation steps")
    learning_rate: float = _field(1e-5, "peak learning rate of AdamW")
    warmup_ratio: float = _field(0.1, "linear warm-up over this fraction of the steps, then linear decay")
    weight_decay: float = _field(0.01, "AdamW weight decay; never applied to biases and LayerNorm weights")
    max_grad_norm: float | None = _field(1.0, "gradient clipping norm; None: no clipping")
    max_length: int = _field(128, "tokens per example; longer inputs are truncated")
    evals_per_epoch: int = _field(4, "test-set evaluations per epoch (eval curves), plus one at the end")
    log_every: int = _field(5, "optimizer steps between train-loss points (one host sync each)")
    per_device_batch_size: int | None = _field(
        None, "examples per device and micro-step; None: batch_size / processes; smaller: gradient accumulation")
    eval_batch_size: int | None = _field(
        None, "evaluation batch per device; None: 256 on a GPU, 32 on CPU", "never")
    precision: str = _field("auto", "auto (GPU: bf16 if supported, else fp16; CPU: bf16 autocast where the CPU "
                                    "has AVX-512 BF16 or AMX, else fp32), fp32, bf16, fp16", "resolved")
    group_by_length: bool = _field(True, "batches of similar length: less padding (the HF Trainer's sampler)")
    adapter_size: int | None = _field(None, "Houlsby adapter bottleneck size; None: no adapters")
    adapter_train_layer_norm: bool = _field(True, "adapter runs also train the LayerNorms (as adapter-bert)")
    dropout: float | None = _field(None, "hidden/attention dropout; None: the model's own")
    max_steps: int | None = _field(None, "cap on optimizer steps (smoke tests, benchmarks)")
    task: str = _field("task2", "results sub-folder, a plain name such as task2 or task3")
    data_dir: str | None = _field(None, "data folder; None: $DATA_DIR, else ./data", "never")
    results_dir: str = _field("results", "where run folders are written", "never")
    save_adapter: bool = _field(True, "adapter and LoRA runs save their trained weights in the run folder", "never")
    num_threads: int | None = _field(None, "CPU threads for torch; None: torch's default", "never")
    compile: bool = _field(False, "torch.compile the model (GPU; pays off for long runs only)", "never")
    method: str | None = _field(
        None, "full, adapter or lora; None: adapter when adapter_size is set, else full", "unless_default")
    lora_rank: int = _field(8, "LoRA rank r (method=lora)", "unless_default")
    lora_alpha: int = _field(16, "LoRA scaling alpha (method=lora)", "unless_default")
    early_stopping_patience: int | None = _field(
        None, "select on the dev split: evaluate dev macro-F1 at every evaluation, report the test metrics of the "
              "best one, stop after this many evaluations without improvement; None: no dev split, report the last",
        "unless_default")
    dropout_kernel: str = _field(
        "auto", "dropout's random mask: torch (the model's own), int16 (four mask lanes per 64-bit draw, "
                "studykit/dropout.py), auto (int16 for bf16 on CPU, else torch)", "resolved", legacy="torch")

    def __post_init__(self):
        if not isinstance(self.dataset, str) and not (
                isinstance(self.dataset, (list, tuple)) and self.dataset
                and all(isinstance(n, str) for n in self.dataset) and len(set(self.dataset)) == len(self.dataset)):
            raise ValueError(f"bad RunConfig for {self.model_name}: dataset must be a name or a non-empty list of "
                             f"distinct names to merge, got {self.dataset!r}")
        names = [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)
        bad = [n for n in names if n not in DATASET_NAMES]
        if bad:
            raise DataError(f"unknown dataset {bad[0]!r}; valid names: {', '.join(DATASET_NAMES)}")
        for message in self._problems():
            raise ValueError(f"bad RunConfig for {self.model_name} / {self.dataset}: {message}")
        if self.method == ("adapter" if self.adapter_size else "full"):
            self.method = None  # the implied method: spelled out or not, one configuration and one hash

    def _problems(self):
        """What is wrong with the settings, one message per field: the field, the value and what is valid.
        Every check is guarded by its type check, so a value of the wrong type is named, never a TypeError."""
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v):  # a real, finite number: NaN and inf never make a run, only a late failure
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def is_path(v):
            return isinstance(v, (str, os.PathLike)) and str(v).strip() != ""

        def got(name):
            return f"got {getattr(self, name)!r}"
        checks = [
            (isinstance(self.model_name, (str, os.PathLike)) and str(self.model_name).strip() != "",
             f"model_name must be a hub id, a local folder or an alias, {got('model_name')}"),
            (is_int(self.seed), f"seed must be an int, {got('seed')}"),
            (not is_int(self.seed) or 0 <= self.seed < MAX_SEED,
             f"seed must be >= 0 (it names the folder seed<int>) and < 2**32 (numpy's seed range), {got('seed')}"),
            (is_int(self.batch_size) and self.batch_size >= 1, f"batch_size must be an int >= 1, {got('batch_size')}"),
            (is_number(self.learning_rate) and 0 < self.learning_rate < 1,
             f"learning_rate must be a number in (0, 1), e.g. 2e-5 (full) or 1e-4 (adapters), {got('learning_rate')}"),
            (is_int(self.epochs) and self.epochs >= 1, f"epochs must be an int >= 1, {got('epochs')}"),
            (is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1,
             f"warmup_ratio must be a number in [0, 1), {got('warmup_ratio')}"),
            (is_number(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be a number >= 0 (0: none), {got('weight_decay')}"),
            (self.max_grad_norm is None or (is_number(self.max_grad_norm) and self.max_grad_norm > 0),
             f"max_grad_norm must be a number > 0 or None (no clipping), {got('max_grad_norm')}"),
            (is_int(self.max_length) and self.max_length >= MIN_MAX_LENGTH,
             f"max_length must be an int >= {MIN_MAX_LENGTH}, {got('max_length')}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.dropout_kernel in DROPOUT_KERNELS,
             f"dropout_kernel must be one of {DROPOUT_KERNELS}, {got('dropout_kernel')}"),
            (self.adapter_size is None or (is_int(self.adapter_size) and self.adapter_size >= 1),
             f"adapter_size must be None or an int >= 1, {got('adapter_size')}"),
            (self.method is None or self.method in METHODS, f"method must be None or one of {METHODS}"),
            (self.method not in ("full", "lora") or self.adapter_size is None,
             f"adapter_size is set but method is {self.method!r}; drop one of them"),
            (self.method != "adapter" or self.adapter_size is not None, "method='adapter' needs adapter_size"),
            (is_int(self.lora_rank) and self.lora_rank >= 1 and is_int(self.lora_alpha) and self.lora_alpha >= 1,
             f"lora_rank and lora_alpha must be ints >= 1, got {self.lora_rank!r} and {self.lora_alpha!r}"),
            (self.dropout is None or (is_number(self.dropout) and 0 <= self.dropout < 1),
             f"dropout must be None (the model's own) or a number in [0, 1), {got('dropout')}"),
            (self.max_steps is None or (is_int(self.max_steps) and self.max_steps >= 1),
             f"max_steps must be None or an int >= 1, {got('max_steps')}"),
            (self.early_stopping_patience is None or (is_int(self.early_stopping_patience)
                                                      and self.early_stopping_patience >= 1),
             f"early_stopping_patience must be None or an int >= 1, {got('early_stopping_patience')}"),
            (self.eval_batch_size is None or (is_int(self.eval_batch_size) and self.eval_batch_size >= 1),
             f"eval_batch_size must be None or an int >= 1, {got('eval_batch_size')}"),
            # Whether it divides batch_size x processes is checked when the run starts (the process count
            # is known there), and recorded as that run's failure, so a grid goes on.
            (self.per_device_batch_size is None or (is_int(self.per_device_batch_size)
                                                    and self.per_device_batch_size >= 1),
             f"per_device_batch_size must be None or an int >= 1, {got('per_device_batch_size')}"),
            (is_int(self.evals_per_epoch) and self.evals_per_epoch >= 1,
             f"evals_per_epoch must be an int >= 1, {got('evals_per_epoch')}"),
            (is_int(self.log_every) and self.log_every >= 1, f"log_every must be an int >= 1, {got('log_every')}"),
            (self.num_threads is None or (is_int(self.num_threads) and self.num_threads >= 1),
             f"num_threads must be None (torch's default) or an int >= 1, {got('num_threads')}"),
            *[(isinstance(getattr(self, name), bool), f"{name} must be True or False, {got(name)}")
              for name in ("group_by_length", "adapter_train_layer_norm", "save_adapter", "compile")],
            (self.data_dir is None or is_path(self.data_dir),
             f"data_dir must be None ($DATA_DIR, else ./data) or a folder, {got('data_dir')}"),
            (is_path(self.results_dir), f"results_dir must be a folder, {got('results_dir')}"),
            (isinstance(self.task, str) and _TASK_NAME.fullmatch(self.task) is not None,
             f"task must be a plain name of letters, digits, '_' or '-' (it names a folder), {got('task')}"),
        ]
        return [message for ok, message in checks if not ok]

    def check_device(self) -> None:
        """Raise NotRunnableHere if this machine cannot run the config's precision as asked: Accelerate would
        quietly train in another one (fp16 on a CPU runs fp32) while the summary recorded the one asked for.
        Called at a run's start, before any file is written: a config may be made on another machine."""
        if self.precision == "fp16" and not torch.cuda.is_available():
            raise NotRunnableHere("precision='fp16' cannot run on this machine (no GPU: Accelerate would train in fp32 "
                             "and the summary would say fp16); use precision='auto', 'bf16' (autocast on CPU) or "
                             "'fp32' here, or run this config on a GPU")

    @property
    def method_name(self) -> str:
        """The training method: `method` if set, else adapter when `adapter_size` is set, else full."""
        return self.method or ("adapter" if self.adapter_size else "full")

    @property
    def uses_dev(self) -> bool:
        """Whether the run reads a dev split (for selection on dev): its data, and so its hash, include it."""
        return self.early_stopping_patience is not None

    def data_fingerprint(self) -> str:
        """The fingerprint of the data this run reads (the dev split included when it uses one)."""
        return data_fingerprint(self.dataset, self.data_dir, dev=self.uses_dev)

    @property
    def resolved_precision(self) -> str:
        """The precision this run uses on this machine: `precision`, with "auto" resolved (fp32, bf16, fp16)."""
        return resolve_precision(self.precision)[0]

    @property
    def resolved_dropout_kernel(self) -> str:
        """The dropout this run uses on this machine: `dropout_kernel`, with "auto" resolved (torch, int16)."""
        return resolve_dropout_kernel(self.dropout_kernel, self.resolved_precision)[0]

    def config_hash(self, data: str | None = None) -> str:
        """What identifies a configuration: every field that changes the result (see the module docstring),
        with the precision resolved, plus the data files' content instead of their folder, so fixture and
        real data never share a folder. `data`: the data fingerprint when the caller already took it (a run
        takes it once, at its start)."""
        return hash_of_config(self, data)

    @property
    def run_dir(self) -> Path:
        """`results_dir/<task>/<dataset>/<model>/<config hash>/seed<seed>`: the run's folder."""
        return RunFolder.for_config(self).path

    @property
    def cache_dir(self) -> Path:
        return Path(self.results_dir) / ".cache"


def hash_of_config(config: RunConfig, data: str | None = None) -> str:
    """The configuration hash of `config` (see the module docstring for how each field enters); `data`: the
    data fingerprint when the caller already took it."""
    fields = {}
    for f in dataclasses.fields(config):
        value, rule = getattr(config, f.name), f.metadata.get("hash", "always")
        if rule == "resolved":
            value = getattr(config, f"resolved_{f.name}")
        if rule == "always" or (rule == "unless_default" and value != f.default) or (
                rule == "resolved" and value != f.metadata["legacy"]):
            fields[f.name] = value
    fields["data"] = data or config.data_fingerprint()
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
