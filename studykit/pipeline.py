"""The data pipeline of a run: tokenized splits (cached on disk), the loaders, and the orders they read in.

`tokenize_dataset` turns a `RunConfig`'s dataset into token ids once per (tokenizer, data, max_length);
`build_loaders` gives the run's train, test and dev loaders. The engine (`studykit.training`) calls both.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import NamedTuple

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

from .config import RunConfig
from .data import DATASETS, get_dataset

__all__ = ["tokenize_dataset", "main_process_first", "build_loaders", "eval_loader", "Loaders", "label_names",
           "sampler_seed", "eval_batch_size_for", "DataChanged"]


class DataChanged(RuntimeError):
    """The data files changed while a run used them: its results would be filed under the wrong data."""


def tokenize_dataset(config: RunConfig, tokenizer, accelerator: Accelerator | None = None):
    """Tokenized train/test splits (and dev, when the run selects on it), cached on disk per
    (tokenizer, dataset and splits, max_length).

    The cache lives under `<results_dir>/.cache/tokenized/`, so the runs of a grid after the first
    load it in well under a second instead of tokenizing again.
    """
    fingerprint = config.data_fingerprint()
    key = hashlib.sha256(json.dumps({
        "tokenizer": tokenizer.name_or_path, "vocab": len(tokenizer), "sep": tokenizer.sep_token,
        "data": fingerprint, "max_length": config.max_length,
        "class": type(tokenizer).__name__}, sort_keys=True).encode()).hexdigest()[:16]
    path = config.cache_dir / "tokenized" / key

    def build():
        if (path / "dataset_dict.json").is_file():
            return
        raw = get_dataset(config.dataset, tokenizer.sep_token, config.data_dir, dev=config.uses_dev)
        encoded = raw.map(lambda b: tokenizer(b["text"], truncation=True, max_length=config.max_length),
                          batched=True, remove_columns=["text"])
        encoded = encoded.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            if config.data_fingerprint() != fingerprint:  # never cache text under another key
                raise DataChanged(f"the data files of {config.dataset} changed while they were read; run again")
            encoded.save_to_disk(str(tmp))
            tmp.replace(path)
        except OSError:  # a sweep worker beside us finished the same cache first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            if not (path / "dataset_dict.json").is_file():
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    main_process_first(accelerator, build)
    return datasets.load_from_disk(str(path))


def main_process_first(accelerator: Accelerator | None, build):
    """`build()` on the main process, then on the others (it fills a cache they read), and its result.

    Unlike Accelerate's `main_process_first`, an error cannot leave the processes waiting at different
    barriers (a deadlock): after each turn all processes learn whether it failed, and all raise.
    """
    if accelerator is None or accelerator.num_processes == 1:
        return build()
    result, error = None, None
    for main_turn in (True, False):
        if accelerator.is_main_process == main_turn:
            try:
                result = build()
            except Exception as err:
                error = err
        failures = [f for f in gather_object([error and f"{type(error).__name__}: {error}"]) if f]
        if error is not None:
            raise error
        if failures:
            raise RuntimeError(f"failed on another process: {failures[0]}")
    return result


def eval_batch_size_for(config, device_type: str) -> int:
    """The evaluation batch per device: the config's, else 256 on a GPU and 32 on CPU.

    On CPU a batch of 32 already keeps the matmuls busy and a larger one spans a wider range of lengths
    (more padding); a GPU needs the larger batch to fill its cores (bench/throughput.py measures both)."""
    if config.eval_batch_size:
        return config.eval_batch_size
    return 256 if device_type == "cuda" else 32


def label_names(config) -> list[str]:
    """Class names without loading text: the data module decides them."""
    names = [config.dataset] if isinstance(config.dataset, str) else list(config.dataset)
    return [label for n in names for label in DATASETS[n.rsplit("_", 1)[0]].labels]


def sampler_seed(config, epoch: int) -> int:
    """The seed of the training sampler in `epoch`: a new, reproducible order each epoch."""
    return config.seed * 1000 + epoch


class Loaders(NamedTuple):
    """A run's data loaders: train (length-grouped or shuffled), test and dev (sorted by length, with an `idx`
    column; dev is None without a dev split), and the train sampler's generator."""
    train: DataLoader
    test: DataLoader
    generator: torch.Generator
    dev: DataLoader | None = None


def build_loaders(config, encoded, tokenizer, per_device_batch_size: int, pad_multiple,
                  eval_batch_size: int) -> Loaders:
    """The run's `Loaders`; dev only where `encoded` has a dev split (runs selected on dev)."""
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple)
    columns = ["input_ids", "attention_mask", "label"]
    train = encoded["train"]
    generator = torch.Generator().manual_seed(config.seed)
    if config.group_by_length:
        # A plain list: the sampler reads lengths[i] once per example every epoch, and on a datasets
        # Column each read is an Arrow lookup inside the timed loop.
        sampler = LengthGroupedSampler(per_device_batch_size, lengths=list(train["length"]), generator=generator)
    else:
        sampler = torch.utils.data.RandomSampler(train, generator=generator)
    train_loader = DataLoader(train.select_columns(columns), batch_size=per_device_batch_size, sampler=sampler,
                              collate_fn=collate)
    dev = eval_loader(encoded["dev"], collate, eval_batch_size) if "dev" in encoded else None
    return Loaders(train_loader, eval_loader(encoded["test"], collate, eval_batch_size), generator, dev)


def eval_loader(split, collate, eval_batch_size: int) -> DataLoader:
    """An evaluation loader over a tokenized split, sorted by length (nearly no padding; the order does not
    change the metrics), with an `idx` column that maps each prediction back to the split's order."""
    columns = ["input_ids", "attention_mask", "label", "idx"]
    split = split.add_column("idx", list(range(len(split))))
    order = np.argsort(split["length"], kind="stable")[::-1]
    return DataLoader(split.select(order).select_columns(columns), batch_size=eval_batch_size, shuffle=False,
                      collate_fn=collate)
