"""Full-size rehearsal on CPU: every full-profile cell, two optimizer steps, before a GPU night is spent.

    python bench/rehearsal.py                 # all cells at full size (heavy: minutes per cell on 2 cores)
    python bench/rehearsal.py --cells 0       # one cell; --list shows them
    python bench/rehearsal.py --quick         # tiny shapes, same vocabularies and code path (the test runs it)

What it checks, with no network: the full profile's models at their published shapes (configs shipped in
bench/configs/, random weights), tokenizers built here with each model's vocabulary size and special
tokens, every cell of Tasks 2 and 3 (model x dataset x learning rate / adapters) for 2 optimizer steps
at the profile's batch of 64 = 4 x 16 accumulation under bf16 autocast, through the engine
(`RunConfig`/`train_run`), then one cell through 2 processes (gloo). Shape errors, a broken data path
or an out-of-memory at the first batch show up here instead of in the first hour of the study.
Data: the real files (DATA_DIR / ../shared/data) with test splits cut to 64 examples, else the fixtures.
The first batch of length-grouped sampling holds the longest examples, so step 1 is the largest shape.
Scratch files go to results/bench/rehearsal (git-ignored). Prints one JSON line at the end.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PROGRESS", "text")

CONFIGS = Path(__file__).resolve().parent / "configs"
# The full profile's hub ids -> the shipped config of the same shape.
SHAPES = {"roberta-base": "roberta-base.json", "bert-base-uncased": "bert-base-uncased.json",
          "allenai/scibert_scivocab_uncased": "scibert_scivocab_uncased.json"}
QUICK_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TEST_EXAMPLES = 64


def model_config(name: str, quick: bool = False) -> dict:
    config = json.loads((CONFIGS / SHAPES[name]).read_text())
    config.pop("_source")
    return {**config, **QUICK_SHAPE} if quick else config


def _texts(data_dir: Path):
    """Training texts of every dataset, for the tokenizer's vocabulary."""
    from studykit.data import get_dataset
    for name in ("restaurant_sup", "acl_sup", "agnews_sup"):
        yield from get_dataset(name, " ", data_dir=data_dir)["train"]["text"]


def build_tokenizer(config: dict, data_dir: Path):
    """A fast tokenizer with the model's vocabulary size and special tokens, trained here on the data's
    texts (byte-level BPE for RoBERTa, WordPiece for BERT) and filled up with unused tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    size = config["vocab_size"]
    if config["model_type"] == "roberta":   # RoBERTa's ids: <s> 0, <pad> 1, </s> 2, <unk> 3, <mask> last
        specials = dict(bos_token="<s>", cls_token="<s>", pad_token="<pad>", eos_token="</s>", sep_token="</s>",
                        unk_token="<unk>", mask_token="<mask>")
        head = ["<s>", "<pad>", "</s>", "<unk>"]
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=size - 1, special_tokens=head, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:   # BERT's specials; pad id 0 as in the configs
        specials = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                        mask_token="[MASK]")
        head = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=size, special_tokens=head, show_progress=False)
    tok.train_from_iterator(_texts(data_dir), trainer)
    # The data is too small for the full vocabulary: fill it up with unused entries (as BERT's [unusedN]),
    # in the model's vocabulary itself, so that ids and embedding rows line up one to one.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    fill = size - len(vocab) - (1 if config["model_type"] == "roberta" else 0)
    vocab.update({f"[unused{i}]": len(vocab) + i for i in range(fill)})
    if config["model_type"] == "roberta":   # <mask> is RoBERTa's last id
        vocab["<mask>"] = len(vocab)
        spec["added_tokens"].append(dict(spec["added_tokens"][0], id=vocab["<mask>"], content="<mask>"))
    tok = Tokenizer.from_str(json.dumps(spec))
    cls, sep = specials["cls_token"], specials["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} {sep} $B {sep}" if config["model_type"] == "roberta"
        else f"{cls} $A {sep} $B {sep}", special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=config["max_position_embeddings"] - 2
                                   if config["model_type"] == "roberta" else config["max_position_embeddings"],
                                   **specials)
    if len(fast) != size or fast.pad_token_id != config["pad_token_id"]:
        raise AssertionError(f"tokenizer has {len(fast)} tokens and pad id {fast.pad_token_id}; the model "
                             f"expects {size} and {config['pad_token_id']}")
    return fast


def build_model(name: str, out: Path, data_dir: Path, quick: bool) -> Path:
    """A random model of `name`'s shape with its tokenizer, as a local folder (config, safetensors)."""
    import torch
    import transformers
    if (out / "model.safetensors").is_file():
        return out
    config = model_config(name, quick)
    tokenizer = build_tokenizer(config, data_dir)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(**config))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def rehearsal_data(out: Path, source: Path | None) -> Path:
    """The real data with each test split cut to TEST_EXAMPLES (the cost is training, not evaluation)."""
    if source is None or not (source / "agnews" / "test.csv").is_file():
        from studykit.profiles import FIXTURE_DATA
        return Path(FIXTURE_DATA)
    if (out / "agnews" / "test.csv").is_file():
        return out
    for sub in ("restaurant", "acl", "agnews"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "restaurant" / "train.json", out / "restaurant")
    test = json.loads((source / "restaurant" / "test.json").read_text())
    (out / "restaurant" / "test.json").write_text(json.dumps(dict(list(test.items())[:TEST_EXAMPLES])))
    shutil.copy(source / "acl" / "train.jsonl", out / "acl")
    lines = (source / "acl" / "test.jsonl").read_text().splitlines(keepends=True)
    (out / "acl" / "test.jsonl").write_text("".join(lines[:TEST_EXAMPLES]))
    # agnews is split 9:1 from test.csv: 10 x 64 rows give 576 train and 64 test examples
    with open(source / "agnews" / "test.csv", newline="") as f:
        rows = list(csv.reader(f))[:10 * TEST_EXAMPLES]
    with open(out / "agnews" / "test.csv", "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)
    return out


def cells(quick: bool = False):
    """(label, RunConfig) for every distinct full-profile cell: first seed, Tasks 2 and 3."""
    from studykit.profiles import study_configs
    seen, out = set(), []
    for task in ("task2", "task3"):
        for config in study_configs(task, "full"):
            key = (task, config.model_name, config.dataset, config.learning_rate, config.adapter_size)
            if key in seen:
                continue
            seen.add(key)
            label = (f"{task} {config.model_name} {config.dataset} lr={config.learning_rate:g}"
                     + (f" adapter{config.adapter_size}" if config.adapter_size else ""))
            out.append((label, config))
    return out


def rehearse_config(config, model_dir: Path, data_dir: Path, results_dir: Path):
    return dataclasses.replace(config, model_name=str(model_dir), data_dir=str(data_dir),
                               results_dir=str(results_dir), max_steps=2, precision="bf16",
                               per_device_batch_size=16, seed=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(config, scratch: Path, timeout: float) -> dict:
    """One cell through `accelerate launch` with 2 CPU processes over gloo (64 = 2 x 16 x 2 accumulation)."""
    spec = scratch / "two_process_config.json"
    spec.write_text(json.dumps(dataclasses.asdict(config)))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(Path(__file__).resolve()), "--worker", str(spec)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    summary_path = config.run_dir / "summary.json"
    if proc.returncode != 0 or not summary_path.is_file():
        raise RuntimeError(f"2-process cell failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    summary = json.loads(summary_path.read_text())
    return {"seconds": round(time.perf_counter() - start, 1), "num_processes": summary["num_processes"],
            "gradient_accumulation": summary["gradient_accumulation"]}


def _worker(spec: Path) -> None:
    from accelerate import PartialState

    from studykit.config import RunConfig
    from studykit.grid import run_grid
    config = RunConfig(**json.loads(spec.read_text()))
    run_grid([config], stop_on_error=True)
    PartialState().destroy_process_group()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny hidden sizes and depth (vocabularies kept)")
    parser.add_argument("--cells", type=int, nargs="+", help="only these cell numbers (see --list)")
    parser.add_argument("--list", action="store_true", help="print the cells and exit")
    parser.add_argument("--no-two-process", action="store_true", help="skip the 2-process cell")
    parser.add_argument("--data-dir", help="real data (default: $DATA_DIR, else ../shared/data, else fixtures)")
    parser.add_argument("--scratch", default=str(ROOT / "results" / "bench" / "rehearsal"),
                        help="where models, data and runs go (default: results/bench/rehearsal)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(Path(args.worker))
        return 0
    todo = cells(args.quick)
    if args.list:
        for i, (label, _) in enumerate(todo):
            print(i, label)
        return 0
    import torch

    from studykit.hardware import cpu_name
    from studykit.training import train_run
    if args.threads:
        torch.set_num_threads(args.threads)
    scratch = Path(args.scratch) / ("quick" if args.quick else "full")
    if scratch.exists():
        shutil.rmtree(scratch / "runs", ignore_errors=True)   # a rehearsal always trains, never reuses runs
    source = args.data_dir or os.environ.get("DATA_DIR") or ROOT.parent / "shared" / "data"
    data_dir = rehearsal_data(scratch / "data", Path(source) if source else None)
    selected = [todo[i] for i in args.cells] if args.cells else todo
    results, failures, t_all = [], [], time.perf_counter()
    models = {}
    for label, config in selected:
        if config.model_name not in models:
            t0 = time.perf_counter()
            models[config.model_name] = build_model(config.model_name, scratch / "models" / SHAPES[
                config.model_name].removesuffix(".json"), data_dir, args.quick)
            print(f"built {config.model_name} shape in {time.perf_counter() - t0:.1f} s", flush=True)
        run = rehearse_config(config, models[config.model_name], data_dir, scratch / "runs")
        t0 = time.perf_counter()
        try:
            summary = train_run(run)
        except Exception as err:  # noqa: BLE001 - every cell is tried; failures are the point of a rehearsal
            failures.append({"cell": label, "error": f"{type(err).__name__}: {err}"[:500]})
            print(f"FAILED {label}: {err}", flush=True)
            continue
        seconds = time.perf_counter() - t0
        results.append({"cell": label, "seconds": round(seconds, 1), "steps": summary.get("steps"),
                        "batch": f"{run.batch_size} = {summary.get('num_processes')} x 16 x "
                                 f"{summary.get('gradient_accumulation')}", "precision": summary.get("precision"),
                        "peak_rss_gb": round(summary.get("peak_memory_bytes", 0) / 1e9, 2)})
        print(f"ok {label}: 2 steps + evaluation of {TEST_EXAMPLES} in {seconds:.1f} s", flush=True)
    two = None
    if not args.no_two_process and selected and not failures:
        label, config = selected[0]
        run = rehearse_config(config, models[config.model_name], data_dir, scratch / "runs_2proc")
        try:
            two = {"cell": label, **run_two_processes(run, scratch, timeout=3600)}
            print(f"ok {label} through 2 processes: {two}", flush=True)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            failures.append({"cell": f"{label} (2 processes)", "error": str(err)[-500:]})
    line = {"rehearsal": "quick" if args.quick else "full", "cells_ok": len(results), "cells_failed": len(failures),
            "failures": failures, "two_process": two, "total_seconds": round(time.perf_counter() - t_all, 1),
            "data": str(data_dir), "hardware": f"{cpu_name()}, {torch.get_num_threads()} threads",
            "torch": torch.__version__, "cells": results}
    print(json.dumps(line))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
