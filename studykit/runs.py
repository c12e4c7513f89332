"""The run-folder protocol, in one place: where a run's files live, when it is done, how they are written.

A run writes `results_dir/<task>/<dataset>/<model>/<config hash>/seed<seed>/`:
- `config.json`      the full config (written first),
- `metrics.jsonl`    one JSON object per logged step (train loss) and per evaluation,
- `predictions.json` the final predicted label of every test example, in the test split's order,
- `summary.json`     final metrics, speed, memory, hardware, the config hash the run trained under and its
                     data's source; written last, so its presence means "done",
- `failed.json`      why a run failed (a grid goes on; `retry_failed=True` runs it again; a failure of the
                     environment, such as a full disk, is retried by the next grid without asking),
- `.claim`           while a process trains the run: locked by that process (`flock`, released by the OS when
                     the process ends, however it ends), and naming its pid, host and start time for people
                     (concurrent grids skip a locked run; git ignores the file).
Every file is written atomically (temporary file, then rename): readers never see half a file. A file that
is unreadable anyway (a merge conflict, a truncated copy) is named in a warning and the run counts as not
finished, so the next grid trains it again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import locks

__all__ = ["RunFolder", "safe_name", "write_json_atomic", "check_writable", "run_folders", "grid_row", "dataset_label",
           "clean_stale_temporaries", "ENVIRONMENT_ERRNOS"]

_SEED_FOLDER = re.compile(r"seed(\d+)")
# Failures of the machine, not of the run: retried by the next grid without retry_failed.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
# Temporary files left by a dead process are removed at a grid's start once they are this old.
STALE_TEMP_S = 3600
_TEMP_NAME = re.compile(r"\.[^/]+\.(\d+)\.tmp|.+\.tmp(\d+)")  # .x.json.PID.tmp, <key>.tmpPID, <model>.tmpPID
_REQUIRED_SUMMARY = ("status",)


def safe_name(name: str) -> str:
    """A model id or path made safe as one folder name (`org/model` -> `org--model`)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip("/"))[-80:]
    return name if name.strip(".") else f"model{name}"  # "." and ".." would step out of their folder


def dataset_label(dataset) -> str:
    """A dataset (a name or a list of names to merge) as one string: `a+b` for a merged dataset."""
    return dataset if isinstance(dataset, str) else "+".join(dataset)


def write_json_atomic(path: Path, obj, lines: bool = False) -> None:
    """Write JSON (or JSON lines) to a temporary file and rename it: readers never see half a file.
    An error (disk full, read-only) names the file and leaves no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w") as f:
            if lines:
                f.writelines(json.dumps(r) + "\n" for r in obj)
            else:
                json.dump(obj, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, f"cannot write: {err.strerror}", str(path)) from err
        raise


def check_writable(results_dir) -> None:
    """Raise a PermissionError naming the folder and the fix if nothing can be written under it (also where
    it, or a folder above it, is a file: named, rather than mkdir's bare "File exists")."""
    results_dir = Path(results_dir)
    blocking = next((p for p in [results_dir, *results_dir.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise PermissionError(f"results dir {results_dir} is not writable ({blocking} is a file, not a folder); "
                              "choose another with results_dir=... or RESULTS_DIR, or move the file away")
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"results dir {results_dir} is not writable ({err.strerror}); choose another "
                              "with results_dir=... or RESULTS_DIR") from None


def clean_stale_temporaries(results_dir) -> list[Path]:
    """Remove temporary files and folders (`.x.json.PID.tmp`, `tokenized/<key>.tmpPID`, `models/<name>.tmpPID`)
    whose process is gone and that are older than an hour; returns what was removed."""
    removed = []
    now = time.time()
    for path in Path(results_dir).rglob("*tmp*"):
        match = _TEMP_NAME.fullmatch(path.name)
        if not match:
            continue
        try:
            pid, age = int(match.group(1) or match.group(2)), now - path.lstat().st_mtime
            if age < STALE_TEMP_S or locks.pid_alive(pid):
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path)
        except OSError:
            continue  # gone meanwhile, or read-only: harmless
    return removed


def _read(path: Path):
    return json.loads(path.read_text())


def _read_or_warn(path: Path, kind: type):
    """The JSON in `path` if it reads as a `kind`, else None with a warning naming the file (missing: None)."""
    try:
        value = _read(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        warnings.warn(f"unreadable {path} ({type(err).__name__}: {err}); the run counts as not finished and "
                      "the next grid trains it again", stacklevel=3)
        return None
    if not isinstance(value, kind):
        warnings.warn(f"unreadable {path}: expected a JSON {kind.__name__}, found {type(value).__name__}; the run "
                      "counts as not finished and the next grid trains it again", stacklevel=3)
        return None
    return value


@dataclass(frozen=True)
class RunFolder:
    """One run's folder. Build it once per run (`for_config`): the config hash, with the data's content
    fingerprint, is computed once, and everything the run writes goes to this one folder."""
    path: Path
    config_hash: str | None = None
    data_fingerprint: str | None = None

    @classmethod
    def for_config(cls, config) -> "RunFolder":
        fingerprint = config.data_fingerprint()
        digest = config.config_hash(data=fingerprint)
        root = Path(config.results_dir)
        path = root / config.task / dataset_label(config.dataset) / safe_name(config.model_name) / digest
        path = path / f"seed{config.seed}"
        if not path.resolve().is_relative_to(root.resolve()):  # names are checked; this is the last guard
            raise ValueError(f"run folder {path} would lie outside results_dir {root}")
        return cls(path, digest, fingerprint)

    # -- paths
    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    predictions_path = property(lambda self: self.path / "predictions.json")
    summary_path = property(lambda self: self.path / "summary.json")
    failed_path = property(lambda self: self.path / "failed.json")
    claim_path = property(lambda self: self.path / ".claim")

    # -- state
    def finished_summary(self) -> dict | None:
        """The summary of a finished run whose files are all readable, else None (a warning names a bad file)."""
        if not self.summary_path.exists():
            return None
        summary = _read_or_warn(self.summary_path, dict)
        if summary is None:
            return None
        missing = [k for k in _REQUIRED_SUMMARY if k not in summary]
        if missing or summary["status"] != "finished":
            warnings.warn(f"incomplete {self.summary_path} (missing {missing or 'status finished'}); the run "
                          "counts as not finished and the next grid trains it again", stacklevel=2)
            return None
        stored = summary.get("config_hash")
        if self.config_hash and stored and stored != self.config_hash:
            warnings.warn(f"refusing run {self.path}: it was trained under config hash {stored}, but its folder "
                          f"says {self.config_hash}", stacklevel=2)
            return None
        config = _read_or_warn(self.config_path, dict)
        if config is None or _read_or_warn(self.predictions_path, list) is None:
            return None
        if _SEED_FOLDER.fullmatch(self.path.name) and self.path.name != f"seed{config.get('seed')}":
            # a copy under another seed's name (cp -r seed1 seed3) would report seed 1's metrics as seed 3's
            warnings.warn(f"refusing run {self.path}: its config.json says seed {config.get('seed')!r}, but its "
                          f"folder is {self.path.name}; the run counts as not finished and the next grid trains it "
                          "again", stacklevel=2)
            return None
        if not self._metrics_readable():
            return None
        return summary

    def _metrics_readable(self) -> bool:
        try:
            rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
            if rows and all(isinstance(r, dict) for r in rows):
                return True
            problem = "no JSON objects"
        except (OSError, ValueError) as err:
            problem = f"{type(err).__name__}: {err}"
        warnings.warn(f"unreadable {self.metrics_path} ({problem}); the run counts as not finished and the next "
                      "grid trains it again", stacklevel=3)
        return False

    @property
    def is_done(self) -> bool:
        return self.finished_summary() is not None

    @property
    def failed(self) -> dict | None:
        """The failure record of a run that failed and has not finished since, else None (also when the
        record is unreadable: a warning names it, and the run is tried again)."""
        if not self.failed_path.exists() or self.is_done:
            return None
        return _read_or_warn(self.failed_path, dict)

    # -- reading
    def summary(self) -> dict:
        return _read(self.summary_path)

    def config(self) -> dict:
        return _read(self.config_path)

    def predictions(self) -> list:
        return _read(self.predictions_path)

    # -- writing (main process only)
    def write_config(self, config) -> None:
        write_json_atomic(self.config_path, dataclasses.asdict(config))

    def write_finished(self, log: list, predictions: list, summary: dict) -> None:
        """Metrics log, predictions, then the summary last: its presence marks the run finished."""
        write_json_atomic(self.metrics_path, log, lines=True)
        write_json_atomic(self.predictions_path, predictions)
        self.failed_path.unlink(missing_ok=True)
        write_json_atomic(self.summary_path, {**summary, "config_hash": self.config_hash or summary.get("config_hash")})

    def claim(self) -> bool:
        """Claim the run for this process; False: another live process holds it (`studykit.locks.take`: an
        OS lock held while this process lives; a run this process already holds is claimed again at once)."""
        return locks.take(self.path, self.claim_path)

    def release(self) -> None:
        """Give up this process's claim (a claim of another process is left alone)."""
        locks.give_up(self.claim_path)

    def claim_holder(self) -> dict | None:
        """What `.claim` records of its holder (pid, host, time), {} if unreadable, None if there is none."""
        return locks.holder(self.claim_path)

    def write_failed(self, reason: dict) -> None:
        write_json_atomic(self.failed_path, reason)



# Failures recorded before missing files and packages counted as the environment's: retried like them.
_LEGACY_ENVIRONMENT_ERRORS = ("DataError:", "OfflineError:", "ImportError:", "ModuleNotFoundError:",
                              "FileNotFoundError:")


def would_fail_again(failed: dict) -> bool:
    """Whether a recorded failure was the run's own (it fails as set up: skipped until retried on purpose),
    not the environment's (a full disk, a missing file or package: retried once fixed)."""
    error = str(failed.get("error", ""))
    return failed.get("kind") != "environment" and not (
        error.startswith(_LEGACY_ENVIRONMENT_ERRORS) or "needs the package" in error)


def grid_row(config, folder: RunFolder, retry_failed: bool = False) -> tuple[dict, bool]:
    """A grid's row for `config`: its identity plus the recorded outcome, and whether it still has to run
    (not done, and not failed unless `retry_failed` or the failure was the environment's, e.g. a full disk
    or a missing file: `would_fail_again`)."""
    row = {"model_name": config.model_name, "dataset": dataset_label(config.dataset), "seed": config.seed,
           "task": config.task, "training_method": config.method_name, "adapter_size": config.adapter_size,
           "run_dir": str(folder.path)}
    summary = folder.finished_summary()
    if summary is not None:
        return {**row, **summary}, False
    failed = folder.failed
    if failed is not None and not retry_failed and would_fail_again(failed):
        return {**row, **failed, "status": "failed (skipped)"}, False
    return row, True


def run_folders(results_dir, task: str | None = None) -> list[RunFolder]:
    """The run folders under `results_dir` (one task, or all) that hold a readable config.json. Only folders
    named exactly `seed<int>` count, so copies such as `seed1.bak` are never read as runs; a run whose stored
    config hash or seed disagrees with its folder's name is refused (`finished_summary`: a warning naming the
    folder)."""
    root = Path(results_dir)
    pattern = f"{task}/*/*/*/seed*/config.json" if task else "*/*/*/*/seed*/config.json"
    folders = []
    for path in sorted(root.glob(pattern)):
        if not _SEED_FOLDER.fullmatch(path.parent.name) or _read_or_warn(path, dict) is None:
            continue
        folders.append(RunFolder(path.parent, path.parent.parent.name))
    return folders
