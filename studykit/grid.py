"""Grids of runs: `run_grid` runs many configs (on CPU packed on the cores, else in this process or each
across the processes of an `accelerate launch`), `launch_grid` starts that from a notebook. Both return one
row per config.

Grids on one results folder share the work: a run is claimed (`RunFolder.claim`) before it trains, a run
another live process has claimed is left to it, and the grid waits for it at the end, so both grids end with
the full table and every run trains once."""
from __future__ import annotations

import os
import socket
import time
import traceback

import pandas as pd
import torch
from accelerate import PartialState, notebook_launcher
from accelerate.utils import broadcast_object_list

from .config import NotRunnableHere
from .memory import cells_that_do_not_fit
from .runs import ENVIRONMENT_ERRNOS, RunFolder, check_writable, clean_stale_temporaries, grid_row
from .training import DataChanged, progress_bar, train_run

__all__ = ["run_grid", "launch_grid", "failure_record", "cpu_grid_workers"]

WAIT_POLL_S = 2.0  # how often a grid looks at runs that another process is training


def failure_record(err: BaseException) -> dict:
    """What failed.json records: the error, a short traceback, and `kind`: "environment" (a full disk, a
    read-only or failing file system, data edited during the run, a precision this machine cannot run; retried
    by the next grid) or "run"."""
    reason = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=5),
              "kind": "run"}
    if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
        reason.update(kind="environment", errno=err.errno)
    elif isinstance(err, (DataChanged, NotRunnableHere)):  # another machine, or unchanged data, may run it
        reason["kind"] = "environment"
    if isinstance(err, torch.OutOfMemoryError):
        reason["error"] += (" -- set a smaller per_device_batch_size (gradient accumulation keeps "
                            "batch_size) or a smaller max_length")
    return reason


def _record_failure(folder: RunFolder, reason: dict) -> None:
    """Write failed.json; where even that fails (disk full), say so and go on: the run stays not finished."""
    try:
        folder.write_failed(reason)
    except OSError as err:
        print(f"could not record the failure: {err}", flush=True)
    print(f"run failed: {folder.path}: {reason['error']}", flush=True)


def _on_main(state, decide):
    """`decide()` on the main process, its result on every process (all take the same branch)."""
    value = [decide() if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(value)
    return value[0]


def _claim(state, folder: RunFolder) -> str:
    """"train" (claimed by us), "done" (finished meanwhile) or "elsewhere" (another process holds it)."""
    def decide():
        try:
            if not folder.claim():
                return "elsewhere"
        except OSError as err:  # cannot even write the claim (disk full): the run will fail and say why
            print(f"could not claim {folder.path}: {err}", flush=True)
            return "train"
        if folder.is_done:  # finished by another grid between our look and our claim
            folder.release()
            return "done"
        return "train"
    return _on_main(state, decide)


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
    folders = [RunFolder.for_config(c) for c in configs]
    rows, todo = {}, []
    for i, (config, folder) in enumerate(zip(configs, folders)):
        row, to_run = grid_row(config, folder, retry_failed)
        if to_run:
            todo.append(i)
        else:
            rows[i] = row
    if todo and torch.cuda.is_available() and state.is_main_process:
        for warning in memory_warnings([configs[i] for i in todo], torch.cuda.get_device_properties(0).total_memory):
            print(f"warning: {warning}", flush=True)
    if (len(todo) > 1 and not torch.cuda.is_available() and state.num_processes == 1 and not stop_on_error
            and workers != 1):
        workers = workers or cpu_grid_workers(len(todo))
        if workers > 1:
            from .sweep import run_sweep  # sweep builds on this module (failure_record, run_grid): import late
            return run_sweep(configs, devices=["cpu"], workers=workers, retry_failed=retry_failed,
                             threads_per_worker=max(1, (os.cpu_count() or 1) // workers))
    for results_dir in dict.fromkeys(configs[i].results_dir for i in todo):  # every process: all stop together
        check_writable(results_dir)  # where no run could be recorded, stop before the first one
        if state.is_main_process:
            clean_stale_temporaries(results_dir)

    elsewhere = []
    for i in progress_bar(todo, desc="grid", disable=not state.is_main_process or not todo):
        outcome = _claim(state, folders[i])
        if outcome == "train":
            rows[i] = _train_claimed(state, configs[i], folders[i], stop_on_error)
        elif outcome == "done":
            rows[i] = grid_row(configs[i], folders[i])[0]
        else:
            elsewhere.append(i)
    if elsewhere and state.is_main_process:
        print(f"{len(elsewhere)} runs are being trained by another process; waiting for them: "
              + ", ".join(str(folders[i].path) for i in elsewhere), flush=True)
    while elsewhere:  # the other process's runs: wait, or take over the ones it abandoned
        time.sleep(WAIT_POLL_S)
        still = []
        for i in elsewhere:
            row, to_run = _on_main(state, lambda: grid_row(configs[i], folders[i]))
            outcome = "done" if not to_run else _claim(state, folders[i])
            if outcome == "train":
                rows[i] = _train_claimed(state, configs[i], folders[i], stop_on_error)
            elif outcome == "done":
                rows[i] = row if not to_run else grid_row(configs[i], folders[i])[0]
            else:
                still.append(i)
        elsewhere = still
    return pd.DataFrame([rows[i] for i in range(len(configs))])


def _train_claimed(state, config, folder: RunFolder, stop_on_error: bool) -> dict:
    row = grid_row(config, folder, retry_failed=True)[0]
    try:
        return {**row, **train_run(config)}
    except KeyboardInterrupt:
        raise
    except Exception as err:  # recorded, so the morning shows why; the other runs go on
        if stop_on_error:
            raise
        reason = failure_record(err)
        if state.is_main_process:
            _record_failure(folder, reason)
        return {**row, **reason}
    finally:
        if state.is_main_process:
            folder.release()


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
