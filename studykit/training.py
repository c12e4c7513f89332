"""The engine: `train_run` trains one `RunConfig` on Hugging Face Accelerate and writes its run folder.

The same code runs in one process and in several (`accelerate launch`, `torchrun`, or
`launch_grid(..., num_processes=N)` from a notebook). The run-folder protocol is `studykit.runs`; grids of
runs are `studykit.grid`, one layer up.
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from typing import NamedTuple

import accelerate
import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import gather_object, set_seed
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from .adapters import count_parameters
from .config import RunConfig
from .data import DATASETS, dataset_source, get_dataset
from .dropout import use_int16_dropout
from .hardware import cpu_name, resolve_dropout_kernel, resolve_precision, threads_label
from .meter import SpeedMeter
from .methods import method_for
from .modeling import load_model_and_tokenizer, safe_name
from .progress import progress_bar, progress_write
from .runs import RunFolder, check_writable

try:  # peak RSS of this process; the module does not exist on Windows
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

__all__ = ["train_run", "tokenize_dataset", "evaluate",
           "eval_batch_size_for", "build_loaders", "Loaders", "label_names", "sampler_seed",
           "TrainingDiverged", "DataChanged", "estimate_training_seconds"]

datasets.disable_progress_bars()          # one progress bar per run is ours; library bars are noise
transformers.utils.logging.disable_progress_bar()


# ----------------------------------------------------------------------------- data pipeline

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
    _main_process_first(accelerator, build)
    return datasets.load_from_disk(str(path))


def _main_process_first(accelerator: Accelerator | None, build):
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


# ----------------------------------------------------------------------------- training

class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class DataChanged(RuntimeError):
    """The data files changed while a run used them: its results would be filed under the wrong data."""


# Accelerate's names for the precisions a run resolves to: the one place our vocabulary meets Accelerate's.
_ACCELERATE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def _accelerator(precision: str) -> Accelerator:
    """An Accelerator running `precision` (resolved: fp32, bf16 or fp16). Accelerate keeps one process-wide
    AcceleratorState and refuses a second precision; so when the precision changes between runs, that state is
    dropped first (as Accelerate's own test cases do between tests). Only AcceleratorState: PartialState, which holds the
    process group of an `accelerate launch`, stays, and every process of a grid makes the same change."""
    mixed_precision = _ACCELERATE_PRECISION[precision]
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision)


def _optimizer(model, config, fused: bool):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # frozen (adapter and LoRA runs): no gradients, no optimizer state
        is_norm_or_bias = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        (no_decay if is_norm_or_bias else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused or None)


@torch.inference_mode()
def evaluate(model, loader, accelerator, num_labels: int | None = None) -> dict:
    """Accuracy, macro-F1 over all `num_labels` classes (every class of the dataset, also on a subset where
    one is absent), micro-F1 (equal to accuracy for single-label data) and mean loss over the test set,
    every example once, plus `predictions`: the predicted label of each example in the test split's order."""
    model.eval()
    preds, labels, losses, index = [], [], [], []
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
        # Gathered once per batch, so the last batch's padding duplicates are dropped (see Accelerate docs).
        p, y, l, i = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"], loss, batch["idx"]))
        preds.append(p.cpu()), labels.append(y.cpu()), losses.append(l.float().cpu()), index.append(i.cpu())
        num_labels = num_labels or logits.shape[-1]
    model.train()
    y_pred, y_true = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    in_split_order = np.empty_like(y_pred)
    in_split_order[torch.cat(index).numpy()] = y_pred  # the loader is sorted by length
    classes = list(range(num_labels))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0)),
            "f1_micro": float(f1_score(y_true, y_pred, average="micro")),
            "eval_loss": float(torch.cat(losses).mean()), "eval_examples": int(len(y_true)),
            "predictions": in_split_order.tolist()}


def _hardware(accelerator) -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU {cpu_name()}, {threads_label(torch.get_num_threads())}"
    return f"{accelerator.num_processes} x {name}"


def _versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "datasets": datasets.__version__}


def _peak_memory(accelerator) -> dict:
    if accelerator.device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "peak_memory_kind": "cuda max allocated"}
    if resource is None:
        return {"peak_memory_bytes": None, "peak_memory_kind": "not measured (no resource module here)"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_memory_kind": "process peak RSS (includes Python, libraries, data)"}


def _check_max_length(config, model, tokenizer) -> None:
    limits = [n for n in (tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None))
              if isinstance(n, int) and n < 1_000_000]
    if limits and config.max_length > min(limits):
        raise ValueError(f"max_length {config.max_length} is more than model {config.model_name!r} accepts "
                         f"({min(limits)} tokens); set max_length <= {min(limits)}")


def _model_and_data(config: RunConfig, accelerator: Accelerator):
    """The model with its method applied, and the loaders; sets the accumulation steps on `accelerator`."""
    nproc = accelerator.num_processes
    per_device = config.per_device_batch_size or config.batch_size // nproc
    if per_device < 1 or config.batch_size % (per_device * nproc):
        fits = [d for d in range(1, config.batch_size // nproc + 1) if config.batch_size % (d * nproc) == 0]
        raise ValueError(f"batch_size {config.batch_size} is not a multiple of per-device batch "
                         f"{per_device} x {nproc} processes; choose per_device_batch_size from {fits}")
    accelerator.gradient_accumulation_steps = config.batch_size // (per_device * nproc)
    set_seed(config.seed)  # before the model is built: the classifier head's init depends on it
    labels = label_names(config)
    model, tokenizer = _main_process_first(  # one process builds (or downloads) the model, the others read it
        accelerator, lambda: load_model_and_tokenizer(config.model_name, len(labels), config.cache_dir,
                                                      config.dropout, labels))
    _check_max_length(config, model, tokenizer)
    model = method_for(config).apply(model)
    if config.resolved_dropout_kernel == "int16":
        use_int16_dropout(model)  # after the method: adapters' and LoRA's dropout modules are swapped too
    encoded = tokenize_dataset(config, tokenizer, accelerator)
    if config.batch_size > len(encoded["train"]):  # every step would silently use the whole split instead
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(encoded['train'])} training "
                         f"examples of {config.dataset}; choose batch_size <= {len(encoded['train'])}")
    # Multiples of 8 feed a GPU's tensor cores under mixed precision; on CPU they are only extra tokens
    # (one whole bf16 restaurant run trained 6 % faster without them: README, Performance)
    pad_multiple = 8 if accelerator.mixed_precision != "no" and accelerator.device.type != "cpu" else None
    eval_batch_size = eval_batch_size_for(config, accelerator.device.type)
    loaders = build_loaders(config, encoded, tokenizer, per_device, pad_multiple, eval_batch_size)
    if accelerator.is_main_process:
        progress_write(f"[{config.task}] {config.model_name} on {config.dataset}, seed {config.seed}: "
                       f"{len(encoded['train'])} train / "
                       + (f"{len(encoded['dev'])} dev / " if loaders.dev else "")
                       + f"{len(encoded['test'])} test examples, batch "
                       f"{config.batch_size} = {nproc} proc x {per_device} x {accelerator.gradient_accumulation_steps} "
                       f"accum, device {accelerator.device}")
    return model, labels, loaders


class DevSelection:
    """Selection on the dev split (`early_stopping_patience`): keeps the test metrics and predictions of the
    evaluation with the best dev macro-F1 (and, for methods that save weights, those weights), and says
    when `patience` evaluations in a row have not improved on it. Test is never used to choose."""

    def __init__(self, patience: int, keep_weights: bool):
        self.patience, self.keep_weights = patience, keep_weights
        self.best_f1, self.best, self.weights, self.since_best = -1.0, None, None, 0

    def update(self, dev_f1: float, test_metrics: dict, predictions, step: int, epoch: float, model) -> bool:
        """Record one evaluation; True when training should stop."""
        if dev_f1 > self.best_f1:
            self.best_f1, self.since_best = dev_f1, 0
            self.best = {"metrics": dict(test_metrics), "predictions": predictions, "step": step, "epoch": epoch}
            if self.keep_weights:  # trainable weights only (adapters, LoRA, head): small, kept on the host
                self.weights = {n: p.detach().to("cpu", copy=True)
                                for n, p in model.named_parameters() if p.requires_grad}
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def restore(self, model) -> None:
        """Put the selected weights back into `model` (the unwrapped one) before it is saved."""
        if self.weights:
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in self.weights.items():
                    params[name.removeprefix("module.")].copy_(value)


def _train(config: RunConfig, accelerator: Accelerator) -> tuple[dict, list, list, object]:
    """Train and evaluate; returns (summary, metrics log, final test predictions, the trained model)."""
    t_prep = time.perf_counter()
    model, labels, (train_loader, test_loader, generator, dev_loader) = _model_and_data(config, accelerator)
    data_prep_s = time.perf_counter() - t_prep

    # Fused AdamW on CPU too: one kernel instead of a Python loop over every parameter tensor.
    optimizer = _optimizer(model, config, fused=accelerator.device.type in ("cuda", "cpu"))
    if config.compile:
        model = torch.compile(model, dynamic=True)  # dynamic: padded lengths vary from batch to batch
    model, optimizer, train_loader, test_loader = accelerator.prepare(model, optimizer, train_loader, test_loader)
    selection = None
    if dev_loader is not None:
        dev_loader = accelerator.prepare(dev_loader)
        selection = DevSelection(config.early_stopping_patience,
                                 keep_weights=bool(method_for(config).weights_file and config.save_adapter))
    accum = accelerator.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(train_loader) / accum)
    total_steps = min(steps_per_epoch * config.epochs, config.max_steps or math.inf)
    # Stepped once per optimizer step, by us, so the schedule is the same for any process count. Warm-up
    # steps are rounded up, as the Trainer does (TrainingArguments.get_warmup_steps).
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    eval_every = max(1, steps_per_epoch // config.evals_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]

    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    meter, log, step, stop_early = SpeedMeter(accelerator.device), [], 0, False
    loss_sum, loss_count = torch.zeros((), device=accelerator.device), 0
    bar = progress_bar(total=total_steps, desc=f"{safe_name(config.model_name)} {config.dataset} s{config.seed}",
                       disable=not accelerator.is_local_main_process, leave=False)
    model.train()
    for epoch in range(config.epochs):
        generator.manual_seed(sampler_seed(config, epoch))
        meter.start_epoch()
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm is not None:  # None: no clipping
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()   # stays on the device: no host sync per step
            loss_count += 1
            meter.count(batch)
            if not accelerator.sync_gradients:
                continue
            if not optimizer.step_was_skipped:  # an fp16 step the grad scaler skipped leaves the schedule too
                scheduler.step()
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == total_steps:
                value = accelerator.reduce(loss_sum, "mean").item() / loss_count
                if not math.isfinite(value):
                    raise TrainingDiverged(f"training loss is {value} at step {step}; lower the learning "
                                           "rate or use fp32/bf16 instead of fp16")
                log.append({"step": step, "epoch": step / steps_per_epoch, "split": "train", "loss": value,
                            "lr": scheduler.get_last_lr()[0]})
                loss_sum.zero_()
                loss_count = 0
            if step % eval_every == 0 or step == total_steps:
                meter.start_eval()
                metrics = evaluate(model, test_loader, accelerator, len(labels))
                predictions = metrics.pop("predictions")
                meter.end_eval(metrics["eval_examples"])
                log.append({"step": step, "epoch": step / steps_per_epoch, "split": "test", **metrics})
                bar.set_postfix(acc=f"{metrics['accuracy']:.3f}", f1=f"{metrics['f1_macro']:.3f}", refresh=False)
                if selection is not None:
                    meter.start_eval()
                    dev = evaluate(model, dev_loader, accelerator, len(labels))
                    dev.pop("predictions")
                    meter.end_eval(dev["eval_examples"])
                    log.append({"step": step, "epoch": step / steps_per_epoch, "split": "dev", **dev})
                    stop_early = selection.update(dev["f1_macro"], metrics, predictions, step,
                                                  step / steps_per_epoch, accelerator.unwrap_model(model))
            if step >= total_steps or stop_early:
                break
        meter.end_epoch()
        if step >= total_steps or stop_early:
            break
    bar.close()

    keys = ("accuracy", "f1_macro", "f1_micro", "eval_loss", "eval_examples")
    final = {k: next(r for r in reversed(log) if r["split"] == "test")[k] for k in keys}
    selected = {}
    if selection is not None:  # the test metrics of the evaluation chosen on dev, not the last one
        final = {k: selection.best["metrics"][k] for k in keys}
        predictions = selection.best["predictions"]
        selected = {"selected_on": "dev macro-F1", "selected_step": selection.best["step"],
                    "selected_epoch": selection.best["epoch"], "dev_f1_macro": selection.best_f1,
                    "stopped_early": bool(stop_early and step < total_steps),
                    "dev_examples": next(r for r in reversed(log) if r["split"] == "dev")["eval_examples"]}
    model = accelerator.unwrap_model(model)
    if selection is not None:
        selection.restore(model)  # the saved weights are the selected ones
    counts = count_parameters(model)
    summary = {
        **final, "status": "finished", **selected,
        "train_loss": next(r["loss"] for r in reversed(log) if r["split"] == "train"), "steps": step,
        "epochs_trained": step / steps_per_epoch,  # fractional where selection on dev stopped mid-epoch
        **meter.summary(accelerator), "eval_batch_size": eval_batch_size_for(config, accelerator.device.type),
        "data_prep_s": data_prep_s,
        "trainable_params": counts["trainable"], "total_params": counts["total"],
        "checkpoint_bytes": sum(p.numel() * p.element_size() for p in params),
        "num_labels": len(labels), "num_processes": accelerator.num_processes, "gradient_accumulation": accum,
        **dict(zip(("dropout_kernel", "dropout_kernel_reason"), resolve_dropout_kernel(config.dropout_kernel))),
        "pad_to_multiple_of": getattr(train_loader.collate_fn, "pad_to_multiple_of", None),
        "hardware": _hardware(accelerator), "versions": _versions(),
        **_peak_memory(accelerator),
    }
    del optimizer, train_loader, test_loader, dev_loader, selection
    return summary, log, predictions, model


def estimate_training_seconds(config: RunConfig) -> float:
    """At most how long `config` trains on this machine: one optimizer step at its per-device batch, padded to
    max_length (no batch is longer) in its precision, timed after a warm-up step, times its steps. Evaluation
    is not counted. Nothing is written; the random state of the caller is left as it was."""
    precision = resolve_precision(config.precision)[0]
    labels = label_names(config)
    with torch.random.fork_rng(devices=[]):
        model, tokenizer = load_model_and_tokenizer(config.model_name, len(labels), config.cache_dir, config.dropout,
                                                    labels)
        model = method_for(config).apply(model).train()
        train_examples = len(get_dataset(config.dataset, tokenizer.sep_token, config.data_dir)["train"])
        per_device = min(config.per_device_batch_size or config.batch_size, config.batch_size)
        inputs = dict(input_ids=torch.randint(0, len(tokenizer), (per_device, config.max_length)),
                      attention_mask=torch.ones(per_device, config.max_length, dtype=torch.long),
                      labels=torch.randint(0, len(labels), (per_device,)))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)

        def one_step():
            for _ in range(config.batch_size // per_device):  # gradient accumulation's micro-steps
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = model(**inputs).loss
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        one_step()  # warm-up: first calls allocate and pick kernels
        start = time.perf_counter()
        one_step()
        seconds = time.perf_counter() - start
    steps = config.epochs * math.ceil(train_examples / config.batch_size)
    return seconds * min(steps, config.max_steps or steps)


def train_run(config: RunConfig) -> dict:
    """Train one run, or return its summary if it already finished. Only the main process writes files."""
    folder = RunFolder.for_config(config)  # hash and data fingerprint taken once: everything below writes here
    finished = folder.finished_summary()
    if finished is not None:
        return finished
    config.check_device()  # a precision this machine cannot run: refused before any file is written
    source = dataset_source(config.dataset, config.data_dir, dev=config.uses_dev)  # each file's sha256, as the run starts
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere+: fp32 accuracy is not needed here
    torch.backends.cudnn.allow_tf32 = True
    precision, precision_reason = resolve_precision(config.precision)  # decided here, once per run
    accelerator = _accelerator(precision)
    if accelerator.is_main_process:
        check_writable(config.results_dir)
        folder.write_config(config)
        progress_write(f"[{config.task}] {config.model_name} on {config.dataset}, seed {config.seed}: precision "
                       f"{precision} ({precision_reason})")
    t_start = time.perf_counter()
    summary, log, predictions, model = _train(config, accelerator)
    summary.update(precision=precision, precision_reason=precision_reason)
    summary["wall_time_s"] = time.perf_counter() - t_start
    if config.data_fingerprint() != folder.data_fingerprint:
        raise DataChanged(f"the data files of {config.dataset} changed during the run; it is not filed under "
                          f"{folder.path} (its config hash names the data it started with); run it again")
    summary["config_hash"] = folder.config_hash
    summary["data_source"] = source
    method = method_for(config)
    if method.weights_file and config.save_adapter and accelerator.is_main_process:
        method.save(model, folder.path / method.weights_file)
        summary["checkpoint_bytes"] = (folder.path / method.weights_file).stat().st_size
    del model
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        folder.write_finished(log, predictions, summary)
    accelerator.free_memory()
    gc.collect()
    return summary
