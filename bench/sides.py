"""The sides the bench compares, each served by its own worker process.

Sides (same model, batch, learning rate, warm-up, weight decay, clipping, max length, thread count):
- `ours`: the engine, `studykit.training.train_run`, at the precision the bench is told (stated per run);
- `trainer`: `transformers.Trainer` with its defaults (random batches, `DataCollatorWithPadding`), fp32;
- `trainer_gbl`: the same with `train_sampling_strategy="group_by_length"`, fp32;
- `trainer_bf16_gbl`: the Trainer at its best setting on a bf16 CPU: `bf16=True, use_cpu=True` and
  group_by_length.
A worker process imports once and serves jobs (one JSON line each) on stdin; its peak RSS is that side's
peak memory. `whole_run` is different: one whole run in a fresh process, timed from outside.
The data subsets they train on are written by `subsets.py`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.measure import count_train_flops, padding_fraction  # noqa: E402

SIDES = {  # name: (label, precision, length grouping); ours' precision is set per run
    "ours": ("ours (engine)", None, True),
    "trainer": ("Trainer", "fp32", False),
    "trainer_gbl": ("Trainer+gbl", "fp32", True),
    "trainer_bf16_gbl": ("Trainer bf16+gbl", "bf16", True),
}


def labels_of(dataset: str):
    from studykit.config import RunConfig
    from studykit.pipeline import label_names
    return label_names(RunConfig("tiny-bert", dataset))


# ----------------------------------------------------------------------------- the sides' jobs

def _peak_rss() -> int:
    try:
        import resource
    except ImportError:  # Windows: no peak RSS
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _ours_config(job: dict, **changes):
    from studykit.config import RunConfig
    fields = dict(seed=job["seed"], epochs=1, batch_size=job["batch_size"], learning_rate=job["lr"],
                  max_length=job["max_length"], evals_per_epoch=1, max_steps=job.get("max_steps"),
                  dropout=job.get("dropout"), data_dir=job["data_dir"], results_dir=job["results_dir"],
                  num_threads=job["threads"], precision=job["precision"], group_by_length=True,
                  dropout_kernel=job.get("dropout_kernel", "auto"))
    return RunConfig(job["model"], job["dataset"], **{**fields, **changes})


def run_ours(job: dict) -> dict:
    """One epoch of the engine over the job's data (a fresh run folder each time)."""
    import torch
    from studykit.modeling import load_model_and_tokenizer
    from studykit.pipeline import build_loaders, sampler_seed, tokenize_dataset
    from studykit.training import train_run
    config = _ours_config(job)
    shutil.rmtree(config.run_dir, ignore_errors=True)
    summary = train_run(config)
    # The examples it trained on: the engine's own sampler, replayed with the engine's seed for epoch 0.
    model, tokenizer = load_model_and_tokenizer(config.model_name, len(labels_of(job["dataset"])), config.cache_dir)
    encoded = tokenize_dataset(config, tokenizer)
    loaders = build_loaders(config, encoded, tokenizer, config.batch_size, None, 1)
    train_loader, generator = loaders.train, loaders.generator
    generator.manual_seed(sampler_seed(config, 0))
    all_lengths = list(encoded["train"]["length"])
    lengths = [all_lengths[i] for i in list(train_loader.sampler)[:summary["steps"] * config.batch_size]]
    trained_tokens = summary["train_tokens_per_s"] * summary["train_time_s"]
    if abs(trained_tokens - sum(lengths)) > 1e-6 * sum(lengths) + 1:
        raise RuntimeError(f"the replayed sampler disagrees with the engine: {sum(lengths)} tokens replayed, "
                           f"{trained_tokens:.0f} trained; has the engine's sampler seed changed? (bench/sides.py)")
    assert torch.get_num_threads() == job["threads"]
    return {"train_samples_per_s": summary["train_samples_per_s"], "train_tokens_per_s": summary["train_tokens_per_s"],
            "train_time_s": summary["train_time_s"], "steps": summary["steps"], "precision": summary["precision"],
            "eval_samples_per_s": summary["eval_samples_per_s"], "data_prep_s": summary["data_prep_s"],
            "padding_fraction": summary.get("train_padding_fraction"),
            "train_flops": count_train_flops(model, lengths), "train_examples": len(lengths),
            "train_tokens": sum(lengths), "eval_examples": summary["eval_examples"],
            "max_length_fraction": sum(n == job["max_length"] for n in lengths) / len(lengths),
            "accuracy": summary["accuracy"], "f1_macro": summary["f1_macro"], "eval_loss": summary["eval_loss"],
            "peak_rss": _peak_rss()}


def _trainer_args(job: dict, side: str, output_dir: Path, **extra):
    from transformers import TrainingArguments
    _, precision, grouped = SIDES[side]
    return TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=job["batch_size"], learning_rate=job["lr"],
        num_train_epochs=1, max_steps=job.get("max_steps") or -1, warmup_steps=0.1, weight_decay=0.01,
        max_grad_norm=1.0, seed=job["seed"], save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=True, bf16=precision == "bf16",
        train_sampling_strategy="group_by_length" if grouped else "random", **extra)


def _trainer_metrics(pred):
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score
    y_pred = np.argmax(pred.predictions, -1)
    return {"accuracy": accuracy_score(pred.label_ids, y_pred),
            "f1_macro": f1_score(pred.label_ids, y_pred, average="macro")}


def _trainer_data(job: dict):
    from studykit.data import get_dataset
    from studykit.modeling import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer(job["model"], len(labels_of(job["dataset"])),
                                                Path(job["results_dir"]) / ".cache")
    raw = get_dataset(job["dataset"], tokenizer.sep_token, job["data_dir"])
    encoded = raw.map(lambda b: tokenizer(b["text"], truncation=True, max_length=job["max_length"]),
                      batched=True, remove_columns=["text"])
    return model, tokenizer, encoded


def run_trainer(job: dict, side: str) -> dict:
    """One epoch of `transformers.Trainer` at the side's setting on the same data, then its evaluation."""
    import torch
    from accelerate.utils import set_seed
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback

    set_seed(job["seed"])  # as the engine: the classifier head is initialized the same on both sides
    t_prep = time.perf_counter()
    model, tokenizer, encoded = _trainer_data(job)
    data_prep_s = time.perf_counter() - t_prep
    collate = DataCollatorWithPadding(tokenizer)
    batches, counting = [], [True]  # (padded tokens, non-pad lengths) of every training batch collated

    def counting_collate(features):
        batch = collate(features)
        if counting[0]:
            batches.append((batch["input_ids"].numel(), batch["attention_mask"].sum(1).tolist()))
        return batch

    class Clock(TrainerCallback):  # the same interval as the engine's train time: loader + steps
        start = end = None

        def on_epoch_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.end = time.perf_counter()

    out = Path(job["results_dir"]) / "trainer_out"
    clock = Clock()
    trainer = Trainer(model=model, args=_trainer_args(job, side, out), train_dataset=encoded["train"],
                      eval_dataset=encoded["test"], data_collator=counting_collate,
                      compute_metrics=_trainer_metrics, callbacks=[clock])
    trainer.train()
    train_s = clock.end - clock.start
    counting[0] = False
    # The data loader reads one batch ahead (Accelerate's end-of-data check), so more batches were collated
    # than trained: count only the first `global_step` ones.
    trained = batches[:trainer.state.global_step]
    padded_train = sum(p for p, _ in trained)
    lengths = [n for _, ls in trained for n in ls]
    result = trainer.evaluate()
    shutil.rmtree(out, ignore_errors=True)
    assert torch.get_num_threads() == job["threads"]
    return {"train_samples_per_s": len(lengths) / train_s, "train_tokens_per_s": sum(lengths) / train_s,
            "train_time_s": train_s, "steps": trainer.state.global_step, "precision": SIDES[side][1],
            "data_prep_s": data_prep_s, "padding_fraction": 1 - sum(lengths) / padded_train,
            "train_flops": count_train_flops(model, lengths), "train_examples": len(lengths),
            "train_tokens": sum(lengths), "eval_examples": len(encoded["test"]),
            "accuracy": result["eval_accuracy"], "f1_macro": result["eval_f1_macro"], "eval_loss": result["eval_loss"],
            "peak_rss": _peak_rss()}


def evaluate_ours(job: dict) -> dict:
    """One pass of the engine's evaluation (its loader and `evaluate`) over the full test split."""
    import torch
    from accelerate import Accelerator
    from studykit.modeling import load_model_and_tokenizer
    from studykit.pipeline import build_loaders, eval_batch_size_for, tokenize_dataset
    from studykit.evaluation import evaluate
    config = _ours_config(job)
    model, tokenizer = load_model_and_tokenizer(config.model_name, len(labels_of(job["dataset"])), config.cache_dir)
    encoded = tokenize_dataset(config, tokenizer)
    eval_batch_size = eval_batch_size_for(config, "cpu")
    test_loader = build_loaders(config, encoded, tokenizer, config.batch_size, None, eval_batch_size).test
    # The same mixed precision as this process's training runs: Accelerate's state is one per process.
    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if job["precision"] == "bf16" else "no")
    model, test_loader = accelerator.prepare(model, test_loader)
    t = time.perf_counter()
    metrics = evaluate(model, test_loader, accelerator)
    eval_s = time.perf_counter() - t
    lengths = list(encoded["test"]["length"])
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    assert torch.get_num_threads() == job["threads"]
    return {"eval_samples_per_s": metrics["eval_examples"] / eval_s, "eval_examples": metrics["eval_examples"],
            "eval_padding_fraction": padding_fraction(lengths, order, eval_batch_size),
            "eval_batch_size": eval_batch_size}


def evaluate_trainer(job: dict, side: str) -> dict:
    """One pass of `Trainer.evaluate()` at the side's setting (its default batch 8) over the full test split."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer
    model, tokenizer, encoded = _trainer_data(job)
    collate, counts = DataCollatorWithPadding(tokenizer), [0, 0]

    def counting_collate(features):
        batch = collate(features)
        counts[0] += batch["input_ids"].numel()
        counts[1] += int(batch["attention_mask"].sum())
        return batch

    args = _trainer_args(job, side, Path(job["results_dir"]) / "trainer_eval")
    trainer = Trainer(model=model, args=args, eval_dataset=encoded["test"], data_collator=counting_collate)
    t = time.perf_counter()
    trainer.evaluate()
    eval_s = time.perf_counter() - t
    assert torch.get_num_threads() == job["threads"]
    return {"eval_samples_per_s": len(encoded["test"]) / eval_s, "eval_examples": len(encoded["test"]),
            "eval_padding_fraction": 1 - counts[1] / counts[0], "eval_batch_size": args.per_device_eval_batch_size}


def prepare_data(job: dict) -> dict:
    """Engine data preparation on the full dataset: model + tokenizer load and cached tokenization, twice;
    and the exact padding of one full epoch, from the samplers themselves."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from studykit.modeling import load_model_and_tokenizer
    from studykit.pipeline import sampler_seed, tokenize_dataset
    config = _ours_config(job)
    shutil.rmtree(config.cache_dir / "tokenized", ignore_errors=True)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        _, tokenizer = load_model_and_tokenizer(config.model_name, len(labels_of(job["dataset"])), config.cache_dir)
        encoded = tokenize_dataset(config, tokenizer)
        times.append(time.perf_counter() - t)
    lengths, b = list(encoded["train"]["length"]), job["batch_size"]
    seed = sampler_seed(config, 0)
    grouped = list(LengthGroupedSampler(b, lengths=lengths, generator=torch.Generator().manual_seed(seed)))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
    return {"data_prep_first_s": times[0], "data_prep_second_s": times[1], "examples": len(lengths),
            "full_epoch_padding_grouped": padding_fraction(lengths, grouped, b),
            "full_epoch_padding_random": padding_fraction(lengths, shuffled, b)}


# ----------------------------------------------------------------------------- whole runs (fresh processes)

def whole_run(side: str, job: dict) -> dict:
    """One whole run as a user makes it: load, tokenize, train 1 epoch, one final evaluation. The side's
    libraries are imported before (start-up); in_run_wall_s is the rest."""
    t = time.perf_counter()  # after the imports: what comes before is start-up
    if side == "ours":
        from studykit.training import train_run
        config = _ours_config(job)  # its run folder name hashes the data files: counted in the run
        shutil.rmtree(config.run_dir, ignore_errors=True)
        summary = train_run(config)
        return {"f1_macro": summary["f1_macro"], "accuracy": summary["accuracy"], "precision": summary["precision"],
                "dropout_kernel": summary["dropout_kernel"], "train_time_s": summary["train_time_s"],
                "data_prep_s": summary["data_prep_s"],
                "in_run_wall_s": time.perf_counter() - t, "steps": summary["steps"]}
    from accelerate.utils import set_seed
    from transformers import DataCollatorWithPadding, Trainer
    set_seed(job["seed"])
    model, tokenizer, encoded = _trainer_data(job)
    data_prep_s = time.perf_counter() - t
    out = Path(job["results_dir"]) / "trainer_out"
    trainer = Trainer(model=model, args=_trainer_args(job, side, out), train_dataset=encoded["train"],
                      eval_dataset=encoded["test"], data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=_trainer_metrics)
    train = trainer.train()
    result = trainer.evaluate()
    shutil.rmtree(out, ignore_errors=True)
    return {"f1_macro": result["eval_f1_macro"], "accuracy": result["eval_accuracy"], "precision": SIDES[side][1],
            "dropout_kernel": "torch", "train_time_s": train.metrics["train_runtime"], "data_prep_s": data_prep_s,
            "in_run_wall_s": time.perf_counter() - t, "steps": trainer.state.global_step}


def _child_env(threads: int) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PROGRESS": "text"}


def timed_whole_run(side: str, job: dict, log: Path) -> dict:
    """`whole_run` in a fresh Python process; wall_s is that process's whole life, start-up included."""
    t = time.perf_counter()
    with log.open("w") as err:
        done = subprocess.run([sys.executable, __file__, "--whole-run", side, "--job", json.dumps(job)],
                              stdout=subprocess.PIPE, stderr=err, text=True, env=_child_env(job["threads"]),
                              cwd=ROOT)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"whole run of {side} failed; the end of its log {log}:\n{log.read_text()[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": wall}


# ----------------------------------------------------------------------------- the worker processes

def serve(side: str, threads: int) -> None:
    """Serve jobs from stdin (one JSON line each) and answer on stdout; library chatter goes to stderr."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch
    torch.set_num_threads(threads)
    import transformers
    transformers.logging.set_verbosity_error()
    from studykit.config import RunConfig  # noqa: F401  (import cost paid before the first job)
    reply.write(json.dumps({"ready": True}) + "\n")
    reply.flush()
    for line in sys.stdin:
        job = json.loads(line)
        if job["kind"] == "quit":
            break
        if job["kind"] == "prep":
            result = prepare_data(job)
        elif job["kind"] == "eval":
            result = evaluate_ours(job) if side == "ours" else evaluate_trainer(job, side)
        else:
            result = run_ours(job) if side == "ours" else run_trainer(job, side)
        reply.write(json.dumps(result) + "\n")
        reply.flush()


class Worker:
    """A side's worker process: `call(job)` sends one job and returns its answer."""

    def __init__(self, side: str, threads: int, log_dir: Path, name: str | None = None):
        self.side, self.log = side, log_dir / f"{name or side}.log"
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", side, "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"),
                                     text=True, env=_child_env(threads), cwd=ROOT)

    def call(self, job: dict | None) -> dict:
        """Send `job` (None: only wait for the worker's "ready") and return its answer."""
        if job is not None:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.side} died; the end of its log:\n{self.log.read_text()[-3000:]}")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"kind": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description="a bench side's process (started by bench/throughput.py)")
    p.add_argument("--worker", choices=SIDES)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--whole-run", choices=SIDES)
    p.add_argument("--job")
    a = p.parse_args()
    if a.worker:
        serve(a.worker, a.threads)
    else:
        import torch
        import transformers
        if a.whole_run == "ours":  # start-up: each side imports what it runs on, before the clock starts
            import studykit.training  # noqa: F401
        else:
            import studykit.data, studykit.modeling, transformers.trainer  # noqa: E401,F401
        job = json.loads(a.job)
        torch.set_num_threads(job["threads"])
        transformers.logging.set_verbosity_error()
        result = whole_run(a.whole_run, job)
        print(json.dumps(result))
