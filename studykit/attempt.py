"""One run attempted, the same way by every grid: claim its folder, train it, record a failure, release.

`run_grid` (one process or an `accelerate launch`) and the workers of `run_sweep` (several runs side by side)
both go through `attempt_claimed` and `failure_record`, so a run fails, is recorded and is retried alike
however it was started. `wait_for_others` is the end of a grid: runs another process holds are waited for,
or taken over when it abandons them.
"""
from __future__ import annotations

import time
import traceback

import torch
from accelerate.utils import broadcast_object_list

from .config import NotRunnableHere
from .data import DataError
from .modeling import ModelUnavailable
from .pipeline import DataChanged
from .runs import ENVIRONMENT_ERRNOS, RunFolder, grid_row
from .training import train_run

__all__ = ["failure_record", "claim", "attempt_claimed", "wait_for_others", "on_main", "WAIT_POLL_S"]

WAIT_POLL_S = 2.0  # how often a grid looks at runs that another process is training

# What a missing file or package raises: the environment's doing, not the run's; fixed, the run will work.
_ENVIRONMENT_ERRORS = (DataError, ModelUnavailable, ImportError, FileNotFoundError, DataChanged, NotRunnableHere)


def failure_record(err: BaseException) -> dict:
    """What failed.json records: the error, a short traceback, and `kind`: "environment" (a full disk, a
    read-only or failing file system, a missing file or package, a precision this machine cannot run, data
    edited during the run: retried by the next grid) or "run" (the run fails as set up, e.g. it diverged:
    skipped until retried on purpose)."""
    reason = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=5),
              "kind": "run"}
    if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
        reason.update(kind="environment", errno=err.errno)
    elif isinstance(err, _ENVIRONMENT_ERRORS):
        reason["kind"] = "environment"
    if isinstance(err, torch.OutOfMemoryError):
        reason["error"] += (" -- set a smaller per_device_batch_size (gradient accumulation keeps "
                            "batch_size) or a smaller max_length")
    return reason


def record_failure(folder: RunFolder, reason: dict) -> None:
    """Write failed.json; where even that fails (disk full), say so and go on: the run stays not finished."""
    try:
        folder.write_failed(reason)
    except OSError as err:
        print(f"could not record the failure: {err}", flush=True)
    print(f"run failed: {folder.path}: {reason['error']}", flush=True)


def on_main(state, decide):
    """`decide()` on the main process of `state` (None: this process alone), its result on every process."""
    if state is None or state.num_processes == 1:
        return decide()
    value = [decide() if state.is_main_process else None]
    broadcast_object_list(value)
    return value[0]


def claim(folder: RunFolder, state=None) -> str:
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
    return on_main(state, decide)


def attempt_claimed(config, folder: RunFolder, stop_on_error: bool = False, state=None) -> dict:
    """Train a run this process has claimed; its grid row: the summary, or the failure as recorded. The
    claim is released however it ends."""
    is_main = state is None or state.is_main_process
    row = grid_row(config, folder, retry_failed=True)[0]
    try:
        return {**row, **train_run(config)}
    except KeyboardInterrupt:
        raise
    except Exception as err:  # recorded, so the morning shows why; the other runs go on
        if stop_on_error:
            raise
        reason = failure_record(err)
        if is_main:
            record_failure(folder, reason)
        return {**row, **reason}
    finally:
        if is_main:
            folder.release()


def wait_for_others(configs, folders, indices, stop_on_error: bool = False, state=None) -> dict:
    """The runs at `indices` that another process was training: wait until each is finished (its row), or take
    over and train one that process abandoned. Returns {index: row}."""
    rows, waiting = {}, list(indices)
    while waiting:
        time.sleep(WAIT_POLL_S)
        still = []
        for i in waiting:
            row, to_run = on_main(state, lambda: grid_row(configs[i], folders[i]))
            outcome = "done" if not to_run else claim(folders[i], state)
            if outcome == "train":
                rows[i] = attempt_claimed(configs[i], folders[i], stop_on_error, state)
            elif outcome == "done":
                rows[i] = row if not to_run else grid_row(configs[i], folders[i])[0]
            else:
                still.append(i)
        waiting = still
    return rows
