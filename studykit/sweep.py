"""Sweep packing: the independent runs of a grid side by side, one worker process per device.

`run_sweep(configs)` starts one worker per device (each sees only its own GPU through
`CUDA_VISIBLE_DEVICES`, or is a CPU worker with its share of the cores). Workers take runs from one shared
queue in the order given and call `train_run`, so every run writes the same folder as with `run_grid`:
finished runs are skipped (a sweep resumes), a failed run is recorded in its `failed.json`.

Packing suits small models: each run gets a whole device and no communication, where data parallelism
would split small batches into launch-bound slices and add an all-reduce per step. Put long runs first in
`configs`, so that none starts last. `devices=[0, 0, 1, 1]` puts two workers on each device.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue as queue_module
import sys
from pathlib import Path

import pandas as pd
import torch

from .attempt import attempt_claimed, claim, wait_for_others
from .hardware import threads_label
from .progress import progress_bar
from .runs import RunFolder, check_writable, clean_stale_temporaries, grid_row

__all__ = ["run_sweep", "default_devices"]

# Variables that would make a worker believe it is one rank of a distributed job.
_DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                    "MASTER_PORT", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION")


def default_devices() -> list:
    """One entry per visible GPU, else ["cpu"]."""
    n = torch.cuda.device_count()
    return list(range(n)) if n else ["cpu"]


def _row(config) -> dict:
    return grid_row(config, RunFolder.for_config(config), retry_failed=True)[0]


def _worker(worker_id: int, device, threads: int, log_path: str, jobs, results) -> None:
    """One worker: see only `device`, then train the runs taken from `jobs` until it hands out None."""
    # Before CUDA starts in this process: the device this worker sees, and no distributed state.
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if device == "cpu" else str(device)
    for name in _DISTRIBUTED_ENV:
        os.environ.pop(name, None)
    os.environ.setdefault("PROGRESS", "text")
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)  # library output and progress bars go to the worker's log, not the notebook
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    torch.set_num_threads(threads)
    while True:
        item = jobs.get()
        if item is None:
            break
        index, config = item
        if config.num_threads is None and device == "cpu":
            config = dataclasses.replace(config, num_threads=threads)
        results.put(("start", worker_id, index, None))
        folder = RunFolder.for_config(config)
        outcome = claim(folder)
        if outcome != "train":  # another grid trains it, or just finished it
            status = {"status": "running elsewhere"} if outcome == "elsewhere" else {}
            results.put(("done", worker_id, index, {**_row(config), **status}))
            continue
        print(f"worker {worker_id} ({device}): run {index} {folder.path}", flush=True)
        row = {**attempt_claimed(config, folder), "worker": worker_id, "device": str(device)}
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
        folder = RunFolder.for_config(config)
        if folder.path in first_of:
            continue
        first_of[folder.path] = i
        row, to_run = grid_row(config, folder, retry_failed)
        if to_run:
            todo.append(i)
        else:
            rows[i] = row

    for results_dir in dict.fromkeys(configs[i].results_dir for i in todo):
        check_writable(results_dir)  # where no run could be recorded, stop before the first one
        clean_stale_temporaries(results_dir)
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
              f"{threads_label(threads)} each); {len(configs) - len(todo)} already done; logs in {log_root}",
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

    elsewhere = [i for i in todo if rows[i].get("status") == "running elsewhere"]
    if elsewhere:  # claimed by another grid: wait for it (or take over what it abandons), as run_grid does
        print(f"sweep: {len(elsewhere)} runs are being trained by another process; waiting for them", flush=True)
        rows.update(wait_for_others(configs, [RunFolder.for_config(c) for c in configs], elsewhere))
    for i, config in enumerate(configs):  # duplicates share the result of their first listing
        if i not in rows:
            rows[i] = {**rows[first_of[RunFolder.for_config(config).path]]}
    return pd.DataFrame([rows[i] for i in range(len(configs))])


def _reap_dead(procs, running, configs, rows) -> None:
    """A worker that died hard (killed, out of memory) cannot report: record its current run as failed."""
    for w, p in enumerate(procs):
        if p.is_alive() or w not in running:
            continue
        i = running.pop(w)
        reason = {"status": "failed", "error": f"sweep worker {w} exited with code {p.exitcode} during the run",
                  "traceback": "", "kind": "run"}
        try:
            RunFolder.for_config(configs[i]).write_failed(reason)
        except OSError as err:
            print(f"could not record the failure: {err}", flush=True)
        rows[i] = {**_row(configs[i]), **reason, "worker": w}
