"""Training: one run = one `RunConfig`; `train_run` trains it on Hugging Face Accelerate; `run_grid` runs many.

The same code runs in one process and in several (`accelerate launch`, `torchrun`, or
`launch_grid(..., num_processes=N)` from a notebook). Each run writes its own folder under
`results_dir/<task>/<dataset>/<model>/<config hash>/seed<seed>/`:
- `config.json`  the full config (written first),
- `metrics.jsonl` one JSON object per logged step (train loss) and per evaluation,
- `predictions.json` the final predicted label of every test example, in the test split's order,
- `summary.json` final metrics, speed, memory, hardware, versions; written last and atomically, so its
  presence means "finished" and a grid skips the run,
- `failed.json`  why a run failed (the grid goes on; `retry_failed=True` runs it again).
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator
from accelerate.utils import set_seed
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from .hardware import cpu_name
from .data import DATASET_NAMES, DataError, dataset_files, get_dataset
from .modeling import load_model_and_tokenizer, safe_name

__all__ = ["RunConfig", "train_run", "run_grid", "launch_grid", "tokenize_dataset", "progress_bar",
           "TrainingDiverged", "write_json_atomic"]

datasets.disable_progress_bars()          # one progress bar per run is ours; library bars are noise
transformers.utils.logging.disable_progress_bar()

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class RunConfig:
    """Everything that defines one fine-tuning run. Defaults are the report's restaurant/acl setting."""
    model_name: str                      # hub id, local folder, or alias (see studykit.modeling)
    dataset: str                         # e.g. "restaurant_sup" (see studykit.data.DATASET_NAMES)
    seed: int = 1
    epochs: int = 4
    batch_size: int = 64                 # global batch: processes x per-device batch x accumulation
    learning_rate: float = 1e-5
    warmup_ratio: float = 0.1            # linear warm-up over this fraction of the steps, then linear decay
    weight_decay: float = 0.01           # AdamW; never applied to biases and LayerNorm weights
    max_grad_norm: float = 1.0
    max_length: int = 128                # tokens; longer inputs are truncated
    evals_per_epoch: int = 4             # test-set evaluations per epoch (eval curves), plus one at the end
    log_every: int = 5                   # optimizer steps between train-loss points (one host sync each)
    per_device_batch_size: int | None = None  # None: batch_size / processes; smaller: gradient accumulation
    eval_batch_size: int | None = None   # per device; None: 256 on a GPU, 32 on CPU (see eval_batch_size_for)
    precision: str = "auto"              # auto: bf16 on GPUs that support it, else fp16; fp32 on CPU
    group_by_length: bool = True         # batches of similar length: less padding (HF Trainer's method)
    adapter_size: int | None = None      # None: full fine-tuning; int: Houlsby adapters of this bottleneck
    adapter_train_layer_norm: bool = True
    dropout: float | None = None         # None: the model's own; 0 makes 1- and N-process runs comparable
    max_steps: int | None = None         # cap on optimizer steps (smoke tests, benchmarks)
    task: str = "task2"                  # results sub-folder: task2 (full fine-tuning), task3 (adapters)
    data_dir: str | None = None          # None: $DATA_DIR, else ./data
    results_dir: str = "results"
    save_adapter: bool = True            # adapter runs save the trained weights (a few MB) in the run folder
    num_threads: int | None = None       # CPU threads for torch; None: torch's default
    compile: bool = False                # torch.compile the model (GPU; pays off for long runs only)

    def __post_init__(self):
        names = [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)
        bad = [n for n in names if n not in DATASET_NAMES]
        if bad:
            raise DataError(f"unknown dataset {bad[0]!r}; valid names: {', '.join(DATASET_NAMES)}")
        checks = [
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size must be an int >= 1"),
            (0 < self.learning_rate < 1, "learning_rate must be in (0, 1), e.g. 2e-5 (full) or 1e-4 (adapters)"),
            (isinstance(self.epochs, int) and self.epochs >= 1, "epochs must be an int >= 1"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}"),
            (self.adapter_size is None or self.adapter_size >= 1, "adapter_size must be None or an int >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be None or >= 1"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size must be None or >= 1"),
            (self.evals_per_epoch >= 1 and self.log_every >= 1, "evals_per_epoch and log_every must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bad RunConfig for {self.model_name} / {self.dataset}: {message}")

    # What identifies a configuration: everything that changes the result, except the seed (seeds of one
    # configuration are grouped) and where files live. The data files' content is included instead of
    # their folder, so fixture and real data never share a results folder.
    def config_hash(self) -> str:
        # Speed knobs are left out too: the evaluation batch does not change the predictions (the loader is
        # sorted by length and padding is masked), so runs made with another one are still found.
        skip = {"seed", "results_dir", "data_dir", "num_threads", "save_adapter", "compile", "eval_batch_size"}
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        fields["data"] = _data_fingerprint(self.dataset, self.data_dir)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def run_dir(self) -> Path:
        dataset = self.dataset if isinstance(self.dataset, str) else "+".join(self.dataset)
        return (Path(self.results_dir) / self.task / dataset / safe_name(self.model_name)
                / self.config_hash() / f"seed{self.seed}")

    @property
    def cache_dir(self) -> Path:
        return Path(self.results_dir) / ".cache"


_FINGERPRINTS: dict = {}


def _data_fingerprint(dataset, data_dir) -> str:
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        for path in dataset_files(name, data_dir):
            if not path.is_file():  # e.g. agnews from the Hub
                digest.update(b"missing")
                continue
            stat = path.stat()
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if key not in _FINGERPRINTS:
                _FINGERPRINTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            digest.update(_FINGERPRINTS[key].encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- files

def write_json_atomic(path: Path, obj, lines: bool = False) -> None:
    """Write JSON (or JSON lines) to a temporary file and rename it: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        if lines:
            f.writelines(json.dumps(r) + "\n" for r in obj)
        else:
            json.dump(obj, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def progress_bar(*args, **kwargs):
    """tqdm as widgets in an interactive notebook; plain text when PROGRESS=text (headless runs)."""
    if os.environ.get("PROGRESS", "auto") == "text":
        from tqdm.std import tqdm
        kwargs.setdefault("mininterval", 5.0)
        kwargs.setdefault("file", sys.stdout)
    else:
        from tqdm.auto import tqdm
    return tqdm(*args, **kwargs)


# ----------------------------------------------------------------------------- data pipeline

def tokenize_dataset(config: RunConfig, tokenizer, accelerator: Accelerator | None = None):
    """Tokenized train/test splits, cached on disk per (tokenizer, dataset, max_length).

    The cache lives under `<results_dir>/.cache/tokenized/`, so the runs of a grid after the first
    load it in well under a second instead of tokenizing again.
    """
    key = hashlib.sha256(json.dumps({
        "tokenizer": tokenizer.name_or_path, "vocab": len(tokenizer), "sep": tokenizer.sep_token,
        "data": _data_fingerprint(config.dataset, config.data_dir), "max_length": config.max_length,
        "class": type(tokenizer).__name__}, sort_keys=True).encode()).hexdigest()[:16]
    path = config.cache_dir / "tokenized" / key

    def build():
        if (path / "dataset_dict.json").is_file():
            return
        raw = get_dataset(config.dataset, tokenizer.sep_token, config.data_dir)
        encoded = raw.map(lambda b: tokenizer(b["text"], truncation=True, max_length=config.max_length),
                          batched=True, remove_columns=["text"])
        encoded = encoded.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        encoded.save_to_disk(str(tmp))
        try:
            tmp.replace(path)
        except OSError:  # a sweep worker beside us finished the same cache first: keep theirs
            if not (path / "dataset_dict.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    _main_process_first(accelerator, build)
    return datasets.load_from_disk(str(path))


def _main_process_first(accelerator: Accelerator | None, build):
    """`build()` on the main process, then on the others (it fills a cache they read), and its result.

    Unlike Accelerate's `main_process_first`, an error cannot leave the processes waiting at different
    barriers (a deadlock): after each turn all processes learn whether it failed, and all raise.
    """
    if accelerator is None or accelerator.num_processes == 1:
        return build()
    from accelerate.utils import gather_object
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

    Measured with bench/throughput.py's evaluation (MiniLM, 2-core CPU, full restaurant / agnews test
    splits, sorted by length): batch 32 evaluates 133 / 68 examples/s, batch 256 only 101 / 42. On CPU a
    batch of 32 already keeps the matmuls busy, and a larger one only spans a wider range of lengths, so
    more padding (27 % at 256). A GPU needs the larger batch to fill its cores."""
    if config.eval_batch_size:
        return config.eval_batch_size
    return 256 if device_type == "cuda" else 32


def _loaders(config, encoded, tokenizer, per_device, pad_multiple, eval_batch_size: int):
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple)
    columns = ["input_ids", "attention_mask", "label"]
    train = encoded["train"]
    generator = torch.Generator().manual_seed(config.seed)
    if config.group_by_length:
        # A plain list: the sampler reads lengths[i] once per example every epoch, and on a datasets Column
        # each read is an Arrow lookup (agnews: 1.4 s per epoch inside the timed loop, a list: 0.002 s).
        sampler = LengthGroupedSampler(per_device, lengths=list(train["length"]), generator=generator)
    else:
        sampler = torch.utils.data.RandomSampler(train, generator=generator)
    train_loader = DataLoader(train.select_columns(columns), batch_size=per_device, sampler=sampler,
                              collate_fn=collate)
    # Evaluation sorted by length: nearly no padding, and the order does not change the metrics.
    test = encoded["test"].add_column("idx", list(range(len(encoded["test"]))))
    order = np.argsort(test["length"], kind="stable")[::-1]
    test_loader = DataLoader(test.select(order).select_columns(columns + ["idx"]), batch_size=eval_batch_size,
                             shuffle=False, collate_fn=collate)
    return train_loader, test_loader, generator


# ----------------------------------------------------------------------------- training

class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def _mixed_precision(precision: str) -> str:
    if precision == "auto":
        if not torch.cuda.is_available():
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"fp32": "no"}.get(precision, precision)


def _optimizer(model, config, fused: bool):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # frozen (adapter runs): no gradients, no optimizer state
        is_norm_or_bias = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        (no_decay if is_norm_or_bias else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused or None)


@torch.inference_mode()
def evaluate(model, loader, accelerator) -> dict:
    """Accuracy, macro/micro-F1 (scikit-learn) and mean loss over the test set, every example once, plus
    `predictions`: the predicted label of each test example, in the test split's order."""
    model.eval()
    preds, labels, losses, index = [], [], [], []
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits.float(), batch["labels"], reduction="none")
        # Gathered once per batch, so the last batch's padding duplicates are dropped (see Accelerate docs).
        p, y, l, i = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"], loss, batch["idx"]))
        preds.append(p.cpu()), labels.append(y.cpu()), losses.append(l.float().cpu()), index.append(i.cpu())
    model.train()
    y_pred, y_true = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    in_split_order = np.empty_like(y_pred)
    in_split_order[torch.cat(index).numpy()] = y_pred  # the loader is sorted by length
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
            "f1_micro": float(f1_score(y_true, y_pred, average="micro")),
            "eval_loss": float(torch.cat(losses).mean()), "eval_examples": int(len(y_true)),
            "predictions": in_split_order.tolist()}


def _hardware(accelerator) -> str:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU {cpu_name()}, {torch.get_num_threads()} threads"
    return f"{accelerator.num_processes} x {name}"


def _versions() -> dict:
    import accelerate
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "datasets": datasets.__version__}


def _train(config: RunConfig, accelerator: Accelerator) -> tuple[dict, list]:
    nproc = accelerator.num_processes
    per_device = config.per_device_batch_size or config.batch_size // nproc
    if per_device < 1 or config.batch_size % (per_device * nproc):
        raise ValueError(f"batch_size {config.batch_size} is not a multiple of per-device batch "
                         f"{per_device} x {nproc} processes; choose per_device_batch_size accordingly")
    accelerator.gradient_accumulation_steps = config.batch_size // (per_device * nproc)

    set_seed(config.seed)  # before the model is built: the classifier head's init depends on it
    t_prep = time.perf_counter()
    from .data import DATASETS
    labels = _label_names(config)
    model, tokenizer = _main_process_first(  # one process builds (or downloads) the model, the others read it
        accelerator, lambda: load_model_and_tokenizer(config.model_name, len(labels), config.cache_dir,
                                                      config.dropout, labels))
    if config.adapter_size:
        from .adapters import add_adapters
        add_adapters(model, bottleneck_size=config.adapter_size, train_layer_norm=config.adapter_train_layer_norm)
    encoded = tokenize_dataset(config, tokenizer, accelerator)
    pad_multiple = 8 if accelerator.mixed_precision != "no" else None
    eval_batch_size = eval_batch_size_for(config, accelerator.device.type)
    train_loader, test_loader, generator = _loaders(config, encoded, tokenizer, per_device, pad_multiple,
                                                    eval_batch_size)
    data_prep_s = time.perf_counter() - t_prep

    # Fused AdamW on CPU too: one kernel instead of a Python loop over ~100 tensors (MiniLM, 1 thread:
    # optimizer step 0.215 -> 0.038 s CPU, a batch-32 restaurant step 1.46 -> 1.21 s).
    optimizer = _optimizer(model, config, fused=accelerator.device.type in ("cuda", "cpu"))
    if config.compile:
        model = torch.compile(model, dynamic=True)  # dynamic: padded lengths vary from batch to batch
    model, optimizer, train_loader, test_loader = accelerator.prepare(model, optimizer, train_loader, test_loader)
    accum = accelerator.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(train_loader) / accum)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    # The schedule is stepped once per optimizer step, by us, so it is the same for any process count.
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    eval_every = max(1, steps_per_epoch // config.evals_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]

    if accelerator.is_main_process:
        print(f"[{config.task}] {config.model_name} on {config.dataset}, seed {config.seed}: "
              f"{len(encoded['train'])} train / {len(encoded['test'])} test examples, {total_steps} steps, "
              f"batch {config.batch_size} = {nproc} proc x {per_device} x {accum} accum, "
              f"precision {accelerator.mixed_precision}, device {accelerator.device}", flush=True)
    log, train_time, samples, tokens, padded = [], 0.0, 0, torch.zeros((), device=accelerator.device), 0
    loss_sum, loss_count = torch.zeros((), device=accelerator.device), 0
    step, epoch_times, eval_time, eval_count = 0, [], 0.0, 0
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    bar = progress_bar(total=total_steps, desc=f"{safe_name(config.model_name)} {config.dataset} s{config.seed}",
                       disable=not accelerator.is_local_main_process, leave=False)
    model.train()
    for epoch in range(config.epochs):
        generator.manual_seed(config.seed * 1000 + epoch)  # a new, reproducible order each epoch
        t_epoch = t0 = time.perf_counter()
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()   # stays on the device: no host sync per step
            loss_count += 1
            tokens += batch["attention_mask"].sum()
            padded += batch["attention_mask"].numel()  # a host int: no sync
            samples += len(batch["labels"]) * nproc
            if not accelerator.sync_gradients:
                continue
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
                t_eval = time.perf_counter()
                train_time += t_eval - t0
                metrics = evaluate(model, test_loader, accelerator)
                predictions = metrics.pop("predictions")
                eval_time += time.perf_counter() - t_eval
                eval_count += metrics["eval_examples"]
                log.append({"step": step, "epoch": step / steps_per_epoch, "split": "test", **metrics})
                bar.set_postfix(acc=f"{metrics['accuracy']:.3f}", f1=f"{metrics['f1_macro']:.3f}", refresh=False)
                t0 = time.perf_counter()
            if step >= total_steps:
                break
        train_time += time.perf_counter() - t0
        epoch_times.append(time.perf_counter() - t_epoch)
        if step >= total_steps:
            break
    bar.close()
    final = {k: log[-1][k] for k in ("accuracy", "f1_macro", "f1_micro", "eval_loss", "eval_examples")}

    from .adapters import count_parameters
    counts = count_parameters(accelerator.unwrap_model(model))
    trainable_bytes = sum(p.numel() * p.element_size() for p in params)
    summary = {
        **final, "status": "finished", "config_hash": config.config_hash(),
        "train_loss": next(r["loss"] for r in reversed(log) if r["split"] == "train"),
        "steps": step, "epochs_run": len(epoch_times), "train_time_s": train_time,
        "time_per_epoch_s": float(np.mean(epoch_times)) if epoch_times else None,
        "train_samples_per_s": samples / train_time, "train_tokens_per_s": float(tokens.item()) * nproc / train_time,
        "eval_samples_per_s": eval_count / eval_time, "eval_batch_size": eval_batch_size,
        "train_padding_fraction": 1 - float(tokens.item()) / max(padded, 1),  # pad share of the tokens computed
        "data_prep_s": data_prep_s, "trainable_params": counts["trainable"], "total_params": counts["total"],
        "checkpoint_bytes": trainable_bytes, "num_labels": len(labels), "num_processes": nproc, "gradient_accumulation": accum,
        "precision": accelerator.mixed_precision, "hardware": _hardware(accelerator), "versions": _versions(),
    }
    if accelerator.device.type == "cuda":
        summary.update(peak_memory_bytes=torch.cuda.max_memory_allocated(), peak_memory_kind="cuda max allocated")
    else:
        summary.update(peak_memory_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                       peak_memory_kind="process peak RSS (includes Python, libraries, data)")
    if config.adapter_size and config.save_adapter and accelerator.is_main_process:
        from .adapters import save_adapters
        path = config.run_dir / "adapter.safetensors"
        save_adapters(accelerator.unwrap_model(model), path)
        summary["checkpoint_bytes"] = path.stat().st_size
    del model, optimizer, train_loader, test_loader
    return summary, log, predictions


def _label_names(config):
    """Class names without loading text: the data module decides them."""
    from .data import DATASETS
    names = [config.dataset] if isinstance(config.dataset, str) else list(config.dataset)
    return [label for n in names for label in DATASETS[n.rsplit("_", 1)[0]].labels]


def train_run(config: RunConfig) -> dict:
    """Train one run, or return its summary if it already finished. Only the main process writes files."""
    summary_path = config.run_dir / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on Ampere+: fp32 accuracy is not needed here
    torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=_mixed_precision(config.precision))
    if accelerator.is_main_process:
        _check_writable(Path(config.results_dir))
        write_json_atomic(config.run_dir / "config.json", dataclasses.asdict(config))
    t_start = time.perf_counter()
    summary, log, predictions = _train(config, accelerator)
    summary["wall_time_s"] = time.perf_counter() - t_start
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json_atomic(config.run_dir / "metrics.jsonl", log, lines=True)
        write_json_atomic(config.run_dir / "predictions.json", predictions)  # final test predictions
        (config.run_dir / "failed.json").unlink(missing_ok=True)
        write_json_atomic(summary_path, summary)  # last: marks the run finished
    accelerator.free_memory()
    gc.collect()
    return summary


def _check_writable(results_dir: Path) -> None:
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"results dir {results_dir} is not writable ({err.strerror}); choose another "
                              "with results_dir=... or RESULTS_DIR") from None


def run_grid(configs, retry_failed: bool = False, stop_on_error: bool = False):
    """Run every config not finished yet; a failing run is recorded in failed.json and the grid goes on.

    Returns one row per config (pandas DataFrame) with its status and summary.
    """
    import pandas as pd
    from accelerate import PartialState
    configs = list(configs)
    # cpu=True where there is no GPU, as in train_run: a plain PartialState() would not join the process
    # group on CPU, and each of N processes would silently train the whole grid alone.
    is_main = PartialState(cpu=not torch.cuda.is_available()).is_main_process
    for results_dir in dict.fromkeys(c.results_dir for c in configs):  # every process: all stop together
        _check_writable(Path(results_dir))  # where no run could be recorded, stop before the first one
    rows = []
    outer = progress_bar(configs, desc="grid", disable=not is_main)
    for config in outer:
        failed_path = config.run_dir / "failed.json"
        row = {"model_name": config.model_name, "dataset": config.dataset, "seed": config.seed,
               "task": config.task, "adapter_size": config.adapter_size, "run_dir": str(config.run_dir)}
        if failed_path.is_file() and not retry_failed and not (config.run_dir / "summary.json").is_file():
            rows.append({**row, **json.loads(failed_path.read_text()), "status": "failed (skipped)"})
            continue
        try:
            rows.append({**row, **train_run(config)})
        except KeyboardInterrupt:
            raise
        except Exception as err:  # recorded, so the morning shows why; the other runs go on
            if stop_on_error:
                raise
            reason = {"status": "failed", "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc(limit=5)}
            if isinstance(err, torch.OutOfMemoryError):
                reason["error"] += (" -- set a smaller per_device_batch_size (gradient accumulation keeps "
                                    "batch_size) or a smaller max_length")
            if is_main:
                write_json_atomic(failed_path, reason)
                print(f"run failed: {config.run_dir}: {reason['error']}", flush=True)
            rows.append({**row, **reason})
    return pd.DataFrame(rows)


def _grid_worker(configs, retry_failed):
    frame = run_grid(configs, retry_failed=retry_failed)
    from accelerate import PartialState
    state = PartialState()
    state.wait_for_everyone()
    # Tearing the process group down explicitly avoids a rare hang of gloo at interpreter exit.
    state.destroy_process_group()
    return frame


def launch_grid(configs, num_processes: int = 1, retry_failed: bool = False):
    """Run a grid from a notebook: in this process, or in `num_processes` processes (Accelerate's
    notebook_launcher; on CPU they talk over gloo). Returns the grid's status table."""
    if num_processes <= 1:
        return run_grid(configs, retry_failed=retry_failed)
    import socket
    from accelerate import notebook_launcher
    with socket.socket() as s:  # a free port: Accelerate's fixed default 29500 clashes with other jobs on the node
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    notebook_launcher(_grid_worker, (list(configs), retry_failed), num_processes=num_processes, use_port=port)
    from .results import load_results
    return load_results(configs[0].results_dir)
