"""Sweep packing: run the independent runs of a grid side by side, one worker process per device.

`run_sweep(configs)` starts one worker process per device (each sees only its own GPU through
`CUDA_VISIBLE_DEVICES`, or is a CPU worker with its share of the cores). The workers take runs from one
shared queue, in the order given, and call `train_run` on each, so every run writes the same folder, files
and `summary.json` as with `run_grid`: finished runs are skipped, so a sweep resumes where it stopped,
and a run that fails is recorded in its `failed.json` while the others go on.

Why packing instead of data parallelism for our grids. The study's models are small (MiniLM, BERT-base)
and its batches are 64 examples of ~30-130 tokens. One such run leaves a modern GPU mostly idle, and
splitting it over 8 GPUs with DDP makes it worse: each GPU gets an 8-example slice (kernel-launch bound,
barely faster than 64 examples), and every step adds an all-reduce of all gradients. A DDP run on 8 GPUs
is therefore only a small multiple faster than on one. Packing gives every run a whole GPU, with no
communication at all, and runs 8 of them at once: the grid finishes about 8x faster than one GPU running
the runs one after the other, and each run's result is exactly what a single-GPU run gives (same batches,
no per-process sharding).

Expected speedup, 45-run grid on 8 GPUs: with runs of equal length, 45 runs over 8 workers take
ceil(45 / 8) = 6 rounds instead of 45, i.e. 45 / 6 = 7.5x over sequential single-GPU (the last round uses
5 of 8 GPUs). Unequal runs are balanced by the shared queue (a free worker takes the next run), so the
limit is the longest runs: put long runs (large datasets, more epochs) first in `configs` so that no long
run starts last. DDP stays available for one large run (`launch_grid`, `accelerate launch`).
Workers may also share a device (`devices=[0, 0, 1, 1]`) when runs are tiny; on CPU every worker gets
`cores // workers` torch threads (a 2-core machine: 2 workers x 1 thread).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue as queue_module
import sys
import traceback
from pathlib import Path

__all__ = ["run_sweep", "default_devices"]

# Variables that would make a worker believe it is one rank of a distributed job.
_DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                    "MASTER_PORT", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION")


def default_devices() -> list:
    """One entry per visible GPU, else ["cpu"]."""
    import torch
    n = torch.cuda.device_count()
    return list(range(n)) if n else ["cpu"]


def _row(config) -> dict:
    return {"model_name": config.model_name, "dataset": config.dataset, "seed": config.seed, "task": config.task,
            "adapter_size": config.adapter_size, "run_dir": str(config.run_dir)}


def _worker(worker_id: int, device, threads: int, log_path: str, jobs, results) -> None:
    """One worker: see only `device`, then train the runs taken from `jobs` until it hands out None."""
    # Before torch is imported in this process: the device this worker sees, and no distributed state.
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if device == "cpu" else str(device)
    for name in _DISTRIBUTED_ENV:
        os.environ.pop(name, None)
    os.environ.setdefault("PROGRESS", "text")
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)  # library output and progress bars go to the worker's log, not the notebook
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    import dataclasses

    import torch

    from .training import train_run, write_json_atomic
    torch.set_num_threads(threads)
    while True:
        item = jobs.get()
        if item is None:
            break
        index, config = item
        if config.num_threads is None and device == "cpu":
            config = dataclasses.replace(config, num_threads=threads)
        results.put(("start", worker_id, index, None))
        print(f"worker {worker_id} ({device}): run {index} {config.run_dir}", flush=True)
        try:
            row = {**_row(config), **train_run(config), "worker": worker_id, "device": str(device)}
        except Exception as err:  # recorded, so the morning shows why; the other runs go on
            row = {**_row(config), "status": "failed", "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc(limit=5), "worker": worker_id, "device": str(device)}
            write_json_atomic(config.run_dir / "failed.json", {k: row[k] for k in ("status", "error", "traceback")})
            print(f"run failed: {config.run_dir}: {row['error']}", flush=True)
        results.put(("done", worker_id, index, row))
    log.close()


def run_sweep(configs, devices=None, workers: int | None = None, retry_failed: bool = False,
              threads_per_worker: int | None = None, log_dir=None):
    """Run every config not finished yet, several at a time, one worker process per device.

    devices: GPU indices (one worker each; repeat an index to put two workers on one GPU) or "cpu";
        None: every visible GPU, else CPU workers.
    workers: number of worker processes; None: one per device (on CPU: one per core, at most one per run).
    threads_per_worker: torch CPU threads in each worker; None: the machine's cores / workers.
    Returns one row per config, in the order given (pandas DataFrame), like `run_grid`.
    """
    import pandas as pd

    from .training import progress_bar
    configs = list(configs)
    devices = list(devices) if devices is not None else default_devices()
    cores = os.cpu_count() or 1
    if workers is None:
        workers = len(devices) if devices != ["cpu"] else min(cores, max(1, len(configs)))
    devices = [devices[i % len(devices)] for i in range(workers)]
    threads = threads_per_worker or max(1, cores // workers)

    rows: dict[int, dict] = {}
    todo, first_of = [], {}  # the same run (same folder) listed twice runs once
    for i, config in enumerate(configs):
        run_dir = config.run_dir
        if run_dir in first_of:
            continue
        first_of[run_dir] = i
        summary, failed = run_dir / "summary.json", run_dir / "failed.json"
        if summary.is_file():
            rows[i] = {**_row(config), **json.loads(summary.read_text())}
        elif failed.is_file() and not retry_failed:
            rows[i] = {**_row(config), **json.loads(failed.read_text()), "status": "failed (skipped)"}
        else:
            todo.append(i)

    if todo:
        log_root = Path(log_dir or Path(configs[0].results_dir) / ".sweep")
        log_root.mkdir(parents=True, exist_ok=True)
        workers = min(workers, len(todo))
        ctx = mp.get_context("spawn")  # a fresh interpreter: CUDA_VISIBLE_DEVICES is set before CUDA starts
        jobs, results = ctx.Queue(), ctx.Queue()
        for i in todo:
            jobs.put((i, configs[i]))
        for _ in range(workers):
            jobs.put(None)
        procs = [ctx.Process(target=_worker, args=(w, devices[w], threads, str(log_root / f"worker{w}.log"),
                                                   jobs, results), daemon=True) for w in range(workers)]
        print(f"sweep: {len(todo)} runs on {workers} workers ({', '.join(map(str, devices[:workers]))}; "
              f"{threads} CPU threads each); {len(configs) - len(todo)} already done; logs in {log_root}",
              flush=True)
        for p in procs:
            p.start()
        running: dict[int, int] = {}  # worker -> config index
        bar = progress_bar(total=len(todo), desc="sweep")
        try:
            while len([i for i in todo if i in rows]) < len(todo):
                try:
                    kind, w, i, row = results.get(timeout=1.0)
                except queue_module.Empty:
                    _reap_dead(procs, running, configs, rows)
                    if not any(p.is_alive() for p in procs):
                        for i in todo:  # every worker is gone: whatever is left did not run
                            rows.setdefault(i, {**_row(configs[i]), "status": "not run",
                                                "error": "all sweep workers exited"})
                    continue
                if kind == "start":
                    running[w] = i
                else:
                    running.pop(w, None)
                    rows[i] = row
                    bar.update(1)
        except BaseException:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            raise
        finally:
            bar.close()
        for p in procs:
            p.join(timeout=30)

    for i, config in enumerate(configs):  # duplicates share the result of their first listing
        if i not in rows:
            rows[i] = {**rows[first_of[config.run_dir]]}
    return pd.DataFrame([rows[i] for i in range(len(configs))])


def _reap_dead(procs, running, configs, rows) -> None:
    """A worker that died hard (killed, out of memory) cannot report: record its current run as failed."""
    from .training import write_json_atomic
    for w, p in enumerate(procs):
        if p.is_alive() or w not in running:
            continue
        i = running.pop(w)
        reason = {"status": "failed", "error": f"sweep worker {w} exited with code {p.exitcode} during the run",
                  "traceback": ""}
        write_json_atomic(configs[i].run_dir / "failed.json", reason)
        rows[i] = {**_row(configs[i]), **reason, "worker": w}
