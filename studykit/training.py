"""The engine: `train_run` trains one `RunConfig` on Hugging Face Accelerate and writes its run folder.

The same code runs in one process and in several (`accelerate launch`, `torchrun`, or
`launch_grid(..., num_processes=N)` from a notebook). Below it: the data pipeline (`studykit.pipeline`),
evaluation and selection on dev (`studykit.evaluation`), the run-folder protocol (`studykit.runs`); grids of
runs are `studykit.grid`, one layer up.
"""
from __future__ import annotations

import gc
import math
import platform
import time
from dataclasses import dataclass
from typing import NamedTuple

import accelerate
import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from transformers import get_linear_schedule_with_warmup

from .adapters import count_parameters
from .config import RunConfig
from .data import dataset_source, get_dataset
from .dropout import resolve_dropout_kernel, use_int16_dropout
from .evaluation import DevSelection, evaluate
from .hardware import resolve_precision, run_hardware_label
from .meter import SpeedMeter
from .methods import method_for
from .modeling import load_model_and_tokenizer
from .pipeline import (DataChanged, build_loaders, eval_batch_size_for, label_names, main_process_first,
                       sampler_seed, tokenize_dataset)
from .progress import progress_bar, progress_write
from .runs import RunFolder, check_writable, safe_name

try:  # peak RSS of this process; the module does not exist on Windows
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None

__all__ = ["train_run", "RunSetup", "TrainingDiverged", "estimate_training_seconds"]

datasets.disable_progress_bars()          # one progress bar per run is ours; library bars are noise
transformers.utils.logging.disable_progress_bar()


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


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


def _model_and_data(config: RunConfig, setup: "RunSetup", accelerator: Accelerator):
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
    model, tokenizer = main_process_first(  # one process builds (or downloads) the model, the others read it
        accelerator, lambda: load_model_and_tokenizer(config.model_name, len(labels), config.cache_dir,
                                                      config.dropout, labels))
    _check_max_length(config, model, tokenizer)
    model = setup.method.apply(model)
    if setup.dropout_kernel == "int16":
        use_int16_dropout(model)  # after the method: adapters' and LoRA's dropout modules are swapped too
    encoded = tokenize_dataset(config, tokenizer, accelerator)
    if config.batch_size > len(encoded["train"]):  # every step would silently use the whole split instead
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(encoded['train'])} training "
                         f"examples of {config.dataset}; choose batch_size <= {len(encoded['train'])}")
    # Multiples of 8 feed a GPU's tensor cores under mixed precision; on CPU they are only extra tokens
    # (one whole bf16 restaurant run trained 6 % faster without them: README, Performance)
    pad_multiple = 8 if setup.precision != "fp32" and accelerator.device.type != "cpu" else None
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


@dataclass(frozen=True)
class RunSetup:
    """What a run decides once, at its start, on this machine: its precision, its dropout kernel and its
    training method, each with the reason the summary records. Everything below reads them from here."""
    precision: str
    precision_reason: str
    dropout_kernel: str
    dropout_kernel_reason: str
    method: object  # a studykit.methods object: FullFineTuning, HoulsbyAdapters or LoRA

    @classmethod
    def decide(cls, config: RunConfig) -> "RunSetup":
        precision, precision_reason = resolve_precision(config.precision)
        return cls(precision, precision_reason,
                   *resolve_dropout_kernel(config.dropout_kernel, precision), method_for(config))

    def recorded(self) -> dict:
        """The decisions as the summary records them."""
        return {"training_method": self.method.name, "precision": self.precision,
                "precision_reason": self.precision_reason,
                "dropout_kernel": self.dropout_kernel, "dropout_kernel_reason": self.dropout_kernel_reason}


class _Schedule(NamedTuple):
    """Optimizer steps: per epoch, in all (max_steps may cut it), and how often to evaluate."""
    steps_per_epoch: int
    total_steps: int
    eval_every: int

    @classmethod
    def of(cls, config: RunConfig, batches_per_epoch: int, accumulation: int) -> "_Schedule":
        per_epoch = math.ceil(batches_per_epoch / accumulation)
        return cls(per_epoch, min(per_epoch * config.epochs, config.max_steps or math.inf),
                   max(1, per_epoch // config.evals_per_epoch))


class _Evaluations:
    """The run's evaluations: test (and dev, with selection on dev) metrics appended to the log, timed apart
    from training, and the dev selection's verdict."""

    def __init__(self, accelerator, test_loader, dev_loader, num_labels: int, selection, meter, log: list):
        self.accelerator, self.test_loader, self.dev_loader = accelerator, test_loader, dev_loader
        self.num_labels, self.selection, self.meter, self.log = num_labels, selection, meter, log
        self.predictions = None

    def _split(self, model, loader, split: str, step: int, epoch: float) -> dict:
        self.meter.start_eval()
        metrics = evaluate(model, loader, self.accelerator, self.num_labels)
        predictions = metrics.pop("predictions")
        self.meter.end_eval(metrics["eval_examples"])
        self.log.append({"step": step, "epoch": epoch, "split": split, **metrics})
        return {**metrics, "predictions": predictions}

    def run(self, model, step: int, epoch: float, bar) -> bool:
        """Evaluate now; True when selection on dev says to stop."""
        test = self._split(model, self.test_loader, "test", step, epoch)
        self.predictions = test.pop("predictions")
        bar.set_postfix(acc=f"{test['accuracy']:.3f}", f1=f"{test['f1_macro']:.3f}", refresh=False)
        if self.selection is None:
            return False
        dev = self._split(model, self.dev_loader, "dev", step, epoch)
        return self.selection.update(dev["f1_macro"], test, self.predictions, step, epoch,
                                     self.accelerator.unwrap_model(model))


def _log_train_loss(log: list, accelerator, loss_sum, loss_count: int, step: int, epoch: float, lr: float) -> None:
    value = accelerator.reduce(loss_sum, "mean").item() / loss_count
    if not math.isfinite(value):
        raise TrainingDiverged(f"training loss is {value} at step {step}; lower the learning "
                               "rate or use fp32/bf16 instead of fp16")
    log.append({"step": step, "epoch": epoch, "split": "train", "loss": value, "lr": lr})
    loss_sum.zero_()


def _train(config: RunConfig, setup: RunSetup, accelerator: Accelerator) -> tuple[dict, list, list, object]:
    """Train and evaluate; returns (summary, metrics log, final test predictions, the trained model)."""
    t_prep = time.perf_counter()
    model, labels, (train_loader, test_loader, generator, dev_loader) = _model_and_data(config, setup, accelerator)
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
                                 keep_weights=bool(setup.method.weights_file and config.save_adapter))
    schedule = _Schedule.of(config, len(train_loader), accelerator.gradient_accumulation_steps)
    # Stepped once per optimizer step, by us, so the schedule is the same for any process count. Warm-up
    # steps are rounded up, as the Trainer does (TrainingArguments.get_warmup_steps).
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * schedule.total_steps),
                                                schedule.total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    meter, log, step, stop_early = SpeedMeter(accelerator.device), [], 0, False
    evaluations = _Evaluations(accelerator, test_loader, dev_loader, len(labels), selection, meter, log)
    loss_sum, loss_count = torch.zeros((), device=accelerator.device), 0
    bar = progress_bar(total=schedule.total_steps, disable=not accelerator.is_local_main_process, leave=False,
                       desc=f"{safe_name(config.model_name)} {config.dataset} s{config.seed}")
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
            if step % config.log_every == 0 or step == schedule.total_steps:
                _log_train_loss(log, accelerator, loss_sum, loss_count, step, step / schedule.steps_per_epoch,
                                scheduler.get_last_lr()[0])
                loss_count = 0
            if step % schedule.eval_every == 0 or step == schedule.total_steps:
                stop_early = evaluations.run(model, step, step / schedule.steps_per_epoch, bar)
            if step >= schedule.total_steps or stop_early:
                break
        meter.end_epoch()
        if step >= schedule.total_steps or stop_early:
            break
    bar.close()
    model = accelerator.unwrap_model(model)
    summary, predictions = _summary(config, setup, accelerator, log, evaluations, step, schedule, stop_early, model)
    summary.update(**meter.summary(accelerator), data_prep_s=data_prep_s,
                   checkpoint_bytes=sum(p.numel() * p.element_size() for p in params),
                   pad_to_multiple_of=getattr(train_loader.collate_fn, "pad_to_multiple_of", None),
                   **_attention_recorded(model, setup))
    return summary, log, predictions, model


def _attention_recorded(model, setup: RunSetup) -> dict:
    """The attention function the run trained with, and why: nothing in the engine picks it but the dropout."""
    name = model.config._attn_implementation
    if setup.dropout_kernel == "int16":
        reason = "int16 dropout: eager attention with the int16 mask while training, SDPA in evaluation"
    else:
        reason = "the model's default: SDPA where transformers supports it for this class, else eager"
    return {"attention": name, "attention_reason": reason}


def _summary(config, setup, accelerator, log, evaluations, step, schedule, stop_early, model) -> tuple[dict, list]:
    """The run's summary (what summary.json records beside speed) and its final test predictions: those of the
    last evaluation, or, with selection on dev, of the one dev chose (whose weights go back into `model`)."""
    keys = ("accuracy", "f1_macro", "f1_micro", "eval_loss", "eval_examples")
    final = {k: next(r for r in reversed(log) if r["split"] == "test")[k] for k in keys}
    predictions, selected, selection = evaluations.predictions, {}, evaluations.selection
    if selection is not None:  # the test metrics of the evaluation chosen on dev, not the last one
        final = {k: selection.best["metrics"][k] for k in keys}
        predictions = selection.best["predictions"]
        selected = {"selected_on": "dev macro-F1", "selected_step": selection.best["step"],
                    "selected_epoch": selection.best["epoch"], "dev_f1_macro": selection.best_f1,
                    "stopped_early": bool(stop_early and step < schedule.total_steps),
                    "dev_examples": next(r for r in reversed(log) if r["split"] == "dev")["eval_examples"]}
        selection.restore(model)  # the saved weights are the selected ones
    counts = count_parameters(model)
    return {
        **final, "status": "finished", **selected,
        "train_loss": next(r["loss"] for r in reversed(log) if r["split"] == "train"), "steps": step,
        "epochs_trained": step / schedule.steps_per_epoch,  # fractional where selection on dev stopped mid-epoch
        "eval_batch_size": eval_batch_size_for(config, accelerator.device.type),
        "trainable_params": counts["trainable"], "total_params": counts["total"],
        "num_labels": evaluations.num_labels, "num_processes": accelerator.num_processes,
        "gradient_accumulation": accelerator.gradient_accumulation_steps,
        **setup.recorded(), "hardware": run_hardware_label(accelerator.num_processes), "versions": _versions(),
        **_peak_memory(accelerator),
    }, predictions


def estimate_training_seconds(config: RunConfig) -> float:
    """At most how long `config` trains on this machine: one optimizer step at its per-device batch, padded to
    max_length (no batch is longer) in its precision, timed after a warm-up step, times its steps. Evaluation
    is not counted. Nothing is written; the random state of the caller is left as it was."""
    setup = RunSetup.decide(config)
    labels = label_names(config)
    with torch.random.fork_rng(devices=[]):
        model, tokenizer = load_model_and_tokenizer(config.model_name, len(labels), config.cache_dir, config.dropout,
                                                    labels)
        model = setup.method.apply(model).train()
        train_examples = len(get_dataset(config.dataset, tokenizer.sep_token, config.data_dir)["train"])
        per_device = min(config.per_device_batch_size or config.batch_size, config.batch_size)
        inputs = dict(input_ids=torch.randint(0, len(tokenizer), (per_device, config.max_length)),
                      attention_mask=torch.ones(per_device, config.max_length, dtype=torch.long),
                      labels=torch.randint(0, len(labels), (per_device,)))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)

        def one_step():
            for _ in range(config.batch_size // per_device):  # gradient accumulation's micro-steps
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setup.precision == "bf16"):
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
    setup = RunSetup.decide(config)  # precision, dropout kernel and method: decided here, once per run
    accelerator = _accelerator(setup.precision)
    if accelerator.is_main_process:
        check_writable(config.results_dir)
        folder.write_config(config)
        progress_write(f"[{config.task}] {config.model_name} on {config.dataset}, seed {config.seed}: precision "
                       f"{setup.precision} ({setup.precision_reason})")
    t_start = time.perf_counter()
    summary, log, predictions, model = _train(config, setup, accelerator)
    summary["wall_time_s"] = time.perf_counter() - t_start
    if config.data_fingerprint() != folder.data_fingerprint:
        raise DataChanged(f"the data files of {config.dataset} changed during the run; it is not filed under "
                          f"{folder.path} (its config hash names the data it started with); run it again")
    summary["config_hash"] = folder.config_hash
    summary["data_source"] = source
    method = setup.method
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
