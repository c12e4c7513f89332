"""Grids of runs: `run_grid` runs many configs (on CPU packed on the cores, else in this process or each
across the processes of an `accelerate launch`), `launch_grid` starts that from a notebook. Both return one
row per config."""
from __future__ import annotations

import os
import socket
import traceback

import pandas as pd
import torch
from accelerate import PartialState, notebook_launcher

from .runs import RunFolder, check_writable, grid_row
from .sweep import run_sweep
from .training import progress_bar, train_run

__all__ = ["run_grid", "launch_grid", "cpu_grid_workers"]


# Packing on CPU: each worker process gets this many torch threads, and a grid of several pending runs
# cores // this many workers. One thread per worker was the fastest layout in bf16 and fp32 on the 2-core
# machine (bench/packing.py; bench/results/2026-11-29_packing_cpu.txt, README "Performance").
CPU_THREADS_PER_WORKER = 1


def cpu_grid_workers(pending: int) -> int:
    """Worker processes for `pending` runs on this CPU: $GRID_WORKERS if set, else the measured layout."""
    cores = os.cpu_count() or 1
    chosen = os.environ.get("GRID_WORKERS") or str(max(1, cores // CPU_THREADS_PER_WORKER))
    if not chosen.isdigit() or int(chosen) < 1:
        raise ValueError(f"GRID_WORKERS must be a whole number >= 1 (1: one run at a time), got {chosen!r}")
    return min(int(chosen), max(1, pending))


def run_grid(configs, retry_failed: bool = False, stop_on_error: bool = False,
             workers: int | None = None) -> pd.DataFrame:
    """Run every config not finished yet; a failing run is recorded in failed.json and the grid goes on.

    workers: on CPU, runs side by side in this many worker processes (`studykit.sweep`), each with its
        share of the cores; None: the measured best for this machine when more than one run is pending
        (`cpu_grid_workers`, $GRID_WORKERS overrides it); 1: one run after the other in this process. GPU
        grids, grids inside `accelerate launch` and `stop_on_error=True` run in this process.
    Returns one row per config (pandas DataFrame) with its status and summary.
    """
    configs = list(configs)
    # cpu=True where there is no GPU, as in train_run: a plain PartialState() would not join the process
    # group on CPU, and each of N processes would silently train the whole grid alone.
    state = PartialState(cpu=not torch.cuda.is_available())
    is_main = state.is_main_process
    for results_dir in dict.fromkeys(c.results_dir for c in configs):  # every process: all stop together
        check_writable(results_dir)  # where no run could be recorded, stop before the first one
    if not torch.cuda.is_available() and state.num_processes == 1 and not stop_on_error and workers != 1:
        pending = sum(grid_row(c, RunFolder.for_config(c), retry_failed)[1] for c in configs)
        workers = workers or cpu_grid_workers(pending)
        if workers > 1 and pending > 1:
            cores = os.cpu_count() or 1
            return run_sweep(configs, devices=["cpu"], workers=workers, retry_failed=retry_failed,
                             threads_per_worker=max(1, cores // workers))
    rows = []
    for config in progress_bar(configs, desc="grid", disable=not is_main):
        folder = RunFolder.for_config(config)
        row, to_run = grid_row(config, folder, retry_failed)
        if not to_run:
            rows.append(row)
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
                folder.write_failed(reason)
                print(f"run failed: {folder.path}: {reason['error']}", flush=True)
            rows.append({**row, **reason})
    return pd.DataFrame(rows)


def _grid_worker(configs, retry_failed):
    run_grid(configs, retry_failed=retry_failed)
    state = PartialState()
    state.wait_for_everyone()
    # Tearing the process group down explicitly avoids a rare hang of gloo at interpreter exit.
    state.destroy_process_group()


def launch_grid(configs, num_processes: int = 1, retry_failed: bool = False) -> pd.DataFrame:
    """Run a grid from a notebook: through `run_grid` (on CPU, several runs side by side), or each run in
    `num_processes` processes (Accelerate's notebook_launcher; on CPU they talk over gloo). Returns the grid's
    status table, one row per config."""
    configs = list(configs)
    if num_processes <= 1:
        return run_grid(configs, retry_failed=retry_failed)
    with socket.socket() as s:  # a free port: Accelerate's fixed default 29500 clashes with other jobs on the node
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    notebook_launcher(_grid_worker, (configs, retry_failed), num_processes=num_processes, use_port=port)
    # What the workers recorded, read back from the run folders (their return values do not come back).
    return pd.DataFrame([grid_row(c, RunFolder.for_config(c), retry_failed=False)[0] for c in configs])
