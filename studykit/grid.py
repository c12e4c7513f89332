"""Grids of runs: `run_grid` runs many configs (on CPU packed on the cores, else in this process or each
across the processes of an `accelerate launch`), `launch_grid` starts that from a notebook. Both return one
row per config.

Grids on one results folder share the work: a run is claimed (`RunFolder.claim`) before it trains, a run
another live process has claimed is left to it, and the grid waits for it at the end, so both grids end with
the full table and every run trains once."""
from __future__ import annotations

import os
import socket

import pandas as pd
import torch
from accelerate import PartialState, notebook_launcher

from .attempt import attempt_claimed, claim, wait_for_others
from .data import DataError, check_data_files
from .hardware import emulates_bf16
from .memory import cells_that_do_not_fit
from .modeling import check_model_available
from .progress import progress_bar
from .runs import RunFolder, check_writable, clean_stale_temporaries, grid_row
from .sweep import run_sweep
from .training import estimate_training_seconds

__all__ = ["run_grid", "launch_grid", "cpu_grid_workers", "SettingsError", "check_settings",
           "describe_grid", "NothingFinished"]

class SettingsError(ValueError):
    """Settings that cannot work on this machine (a missing data file, a model not to be had here): raised by
    a grid before it writes anything, naming every problem and its fix."""


class NothingFinished(RuntimeError):
    """A grid in which no run finished: says what failed instead of letting the tables fail on no rows."""


def check_settings(configs, data: bool = True, models: bool = True) -> None:
    """Raise one `SettingsError` listing every data file (with `data`) and every model and precision (with
    `models`) the configs need that is not to be had here; nothing is read beyond file names, nothing is written."""
    problems = {}
    for config in configs:
        checks = []
        if data:
            checks.append(("data", (str(config.dataset), config.data_dir, config.uses_dev),
                           lambda c=config: check_data_files(c.dataset, c.data_dir, dev=c.uses_dev)))
        if models:  # what only runs still to train need: their model, and a precision this machine runs
            checks.append(("model", config.model_name, lambda c=config: check_model_available(c.model_name)))
            checks.append(("precision", config.precision, config.check_device))
        for kind, key, check in checks:
            if (kind, key) in problems:
                continue
            try:
                check()
                problems[kind, key] = None
            except (DataError, ValueError, ImportError) as err:
                problems[kind, key] = f"- {kind}: {err}"
    found = [p for p in problems.values() if p]
    if found:
        raise SettingsError("the grid cannot start; nothing was written:\n" + "\n".join(found))


# Packing on CPU: each worker process gets this many torch threads, and a grid of several pending runs
# cores // this many workers. One thread per worker was the fastest layout in bf16 and fp32 on the 2-core
# machine (bench/packing.py; bench/results/2026-11-29_packing_cpu.txt under load, 2-3x; and
# 2026-11-29_packing_bf16_long_runs_cpu.txt on a quiet machine, 1.13x; README "Performance").
CPU_THREADS_PER_WORKER = 1


def cpu_grid_workers(pending: int) -> int:
    """Worker processes for `pending` runs on this CPU: $GRID_WORKERS if set, else the measured layout."""
    cores = os.cpu_count() or 1
    chosen = os.environ.get("GRID_WORKERS") or str(max(1, cores // CPU_THREADS_PER_WORKER))
    if not chosen.isdigit() or int(chosen) < 1:
        raise ValueError(f"GRID_WORKERS must be a whole number >= 1 (1: one run at a time), got {chosen!r}")
    return min(int(chosen), max(1, pending))


def emulated_bf16_warnings(configs) -> list[str]:
    """One warning per model x dataset x method whose runs would train in bf16 on a CPU that only emulates it,
    with the time one measured training step here predicts for them, and how to train in fp32 instead."""
    slow = [c for c in configs if emulates_bf16(c.resolved_precision)]
    cells = {}
    for config in slow:
        cells.setdefault((config.model_name, str(config.dataset), config.method_name), []).append(config)
    warnings = []
    for (model, dataset, method), cell in cells.items():
        seconds = estimate_training_seconds(cell[0])
        warnings.append(
            f"{len(cell)} {model} / {dataset} / {method} run(s) would train in bf16, which this CPU emulates "
            f"(no AVX-512 BF16 or AMX): up to about {seconds / 60:.0f} min each (one bf16 training step at full "
            f"length measured here x the run's steps). PRECISION=fp32 (notebooks) or --precision fp32 (train.py) "
            f"trains them in fp32 instead, into folders of their own (another config hash); interrupt now to choose.")
    return warnings


def describe_grid(grid: pd.DataFrame) -> str:
    """What a grid did: how many runs finished and, for each failure, its error and whether the next grid
    retries it (a failure of the environment) or skips it until asked (`retry_failed=True`, RETRY_FAILED=1)."""
    if grid.empty:
        return "no runs in this grid"
    status = grid["status"].fillna("not finished") if "status" in grid else pd.Series("not finished", grid.index)
    lines = [f"{int((status == 'finished').sum())} of {len(grid)} runs finished"]
    for _, row in grid[status.str.startswith("failed")].iterrows():
        retry = ("the next grid retries it (the environment failed)" if row.get("kind") == "environment" else
                 "skipped until retried: fix the setting, then retry_failed=True or RETRY_FAILED=1")
        lines.append(f"  failed: {row['run_dir']}: {str(row.get('error', '')).splitlines()[0][:300]} -- {retry}")
    return "\n".join(lines)


def memory_warnings(configs, device_memory_bytes: int) -> list[str]:
    """One warning per cell whose estimated peak memory exceeds the device's, each naming a per-device batch
    that fits (`studykit.memory.cells_that_do_not_fit`); printed by `run_grid` on a GPU before the first run."""
    return cells_that_do_not_fit(configs, device_memory_bytes)


def run_grid(configs, retry_failed: bool = False, stop_on_error: bool = False,
             workers: int | None = None) -> pd.DataFrame:
    """Run every config not finished yet; a failing run is recorded in failed.json and the grid goes on.

    workers: on CPU, runs side by side in this many worker processes (`studykit.sweep`), each with its
        share of the cores; None: the measured best for this machine when more than one run is pending
        (`cpu_grid_workers`, $GRID_WORKERS overrides it); 1: one run after the other in this process. GPU
        grids, grids inside `accelerate launch` and `stop_on_error=True` run in this process.
    Runs another process is training are waited for. Returns one row per config (pandas DataFrame) with its
    status and summary. Where every run is finished, nothing is written (a read-only copy renders).
    """
    configs = list(configs)
    # cpu=True where there is no GPU, as in train_run: a plain PartialState() would not join the process
    # group on CPU, and each of N processes would silently train the whole grid alone.
    state = PartialState(cpu=not torch.cuda.is_available())
    check_settings(configs, models=False)  # the data names the run folders: without it none can be found
    folders = [RunFolder.for_config(c) for c in configs]
    rows, todo = {}, []
    for i, (config, folder) in enumerate(zip(configs, folders)):
        row, to_run = grid_row(config, folder, retry_failed)
        if to_run:
            todo.append(i)
        else:
            rows[i] = row
    check_settings([configs[i] for i in todo], data=False)  # finished runs need no model; runs to train do
    if todo and state.is_main_process:
        for warning in emulated_bf16_warnings([configs[i] for i in todo]):
            print(f"warning: {warning}", flush=True)
    if todo and torch.cuda.is_available() and state.is_main_process:
        for warning in memory_warnings([configs[i] for i in todo], torch.cuda.get_device_properties(0).total_memory):
            print(f"warning: {warning}", flush=True)
    if (len(todo) > 1 and not torch.cuda.is_available() and state.num_processes == 1 and not stop_on_error
            and workers != 1):
        workers = workers or cpu_grid_workers(len(todo))
        if workers > 1:
            return run_sweep(configs, devices=["cpu"], workers=workers, retry_failed=retry_failed,
                             threads_per_worker=max(1, (os.cpu_count() or 1) // workers))
    for results_dir in dict.fromkeys(configs[i].results_dir for i in todo):  # every process: all stop together
        check_writable(results_dir)  # where no run could be recorded, stop before the first one
        if state.is_main_process:
            clean_stale_temporaries(results_dir)

    elsewhere = []
    for i in progress_bar(todo, desc="grid", disable=not state.is_main_process or not todo):
        outcome = claim(folders[i], state)
        if outcome == "train":
            rows[i] = attempt_claimed(configs[i], folders[i], stop_on_error, state)
        elif outcome == "done":
            rows[i] = grid_row(configs[i], folders[i])[0]
        else:
            elsewhere.append(i)
    if elsewhere and state.is_main_process:
        print(f"{len(elsewhere)} runs are being trained by another process; waiting for them: "
              + ", ".join(str(folders[i].path) for i in elsewhere), flush=True)
    rows.update(wait_for_others(configs, folders, elsewhere, stop_on_error, state))
    return pd.DataFrame([rows[i] for i in range(len(configs))])


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
        return _report(run_grid(configs, retry_failed=retry_failed))
    with socket.socket() as s:  # a free port: Accelerate's fixed default 29500 clashes with other jobs on the node
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    notebook_launcher(_grid_worker, (configs, retry_failed), num_processes=num_processes, use_port=port)
    # What the workers recorded, read back from the run folders (their return values do not come back).
    return _report(pd.DataFrame([grid_row(c, RunFolder.for_config(c), retry_failed=False)[0]
                                             for c in configs]))


def _report(grid: pd.DataFrame) -> pd.DataFrame:
    """`grid`, after printing what `describe_grid` says of it; a grid in which nothing finished raises
    `NothingFinished` with that text instead, since no table can be drawn from it."""
    text = describe_grid(grid)
    if len(grid) and ("status" not in grid or not (grid["status"] == "finished").any()):
        raise NothingFinished(text)
    print(text, flush=True)
    return grid
