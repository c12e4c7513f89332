"""The run-folder protocol, in one place: where a run's files live, when it is done, how they are written.

A run writes `results_dir/<task>/<dataset>/<model>/<config hash>/seed<seed>/`:
- `config.json`      the full config (written first),
- `metrics.jsonl`    one JSON object per logged step (train loss) and per evaluation,
- `predictions.json` the final predicted label of every test example, in the test split's order,
- `summary.json`     final metrics, speed, memory, hardware; written last, so its presence means "done",
- `failed.json`      why a run failed (a grid goes on; `retry_failed=True` runs it again).
Every file is written atomically (temporary file, then rename): readers never see half a file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .modeling import safe_name

__all__ = ["RunFolder", "write_json_atomic", "check_writable", "run_folders", "grid_row"]

_SEED_FOLDER = re.compile(r"seed(\d+)")


def write_json_atomic(path: Path, obj, lines: bool = False) -> None:
    """Write JSON (or JSON lines) to a temporary file and rename it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        if lines:
            f.writelines(json.dumps(r) + "\n" for r in obj)
        else:
            json.dump(obj, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def check_writable(results_dir) -> None:
    """Raise a PermissionError naming the folder and the fix if nothing can be written under it."""
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"results dir {results_dir} is not writable ({err.strerror}); choose another "
                              "with results_dir=... or RESULTS_DIR") from None


@dataclass(frozen=True)
class RunFolder:
    """One run's folder. Build it once per run (`for_config`): the config hash is computed once, and
    everything the run writes goes to this one folder."""
    path: Path
    config_hash: str | None = None

    @classmethod
    def for_config(cls, config) -> "RunFolder":
        digest = config.config_hash()
        dataset = config.dataset if isinstance(config.dataset, str) else "+".join(config.dataset)
        path = Path(config.results_dir) / config.task / dataset / safe_name(config.model_name) / digest
        return cls(path / f"seed{config.seed}", digest)

    # -- paths
    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    predictions_path = property(lambda self: self.path / "predictions.json")
    summary_path = property(lambda self: self.path / "summary.json")
    failed_path = property(lambda self: self.path / "failed.json")

    # -- state
    @property
    def is_done(self) -> bool:
        return self.summary_path.is_file()

    @property
    def failed(self) -> dict | None:
        """The failure record of a run that failed and has not finished since, else None."""
        if self.is_done or not self.failed_path.is_file():
            return None
        return _read(self.failed_path)

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

    def write_failed(self, reason: dict) -> None:
        write_json_atomic(self.failed_path, reason)


def grid_row(config, folder: RunFolder, retry_failed: bool = False) -> tuple[dict, bool]:
    """A grid's row for `config`: its identity plus the recorded outcome, and whether it still has to run
    (not done, and not failed unless `retry_failed`)."""
    row = {"model_name": config.model_name, "dataset": config.dataset, "seed": config.seed, "task": config.task,
           "training_method": config.method_name, "adapter_size": config.adapter_size, "run_dir": str(folder.path)}
    if folder.is_done:
        return {**row, **folder.summary()}, False
    failed = folder.failed
    if failed is not None and not retry_failed:
        return {**row, **failed, "status": "failed (skipped)"}, False
    return row, True


def run_folders(results_dir, task: str | None = None) -> list[RunFolder]:
    """The run folders under `results_dir` (one task, or all) that hold a config.json. Only folders named
    exactly `seed<int>` count, so copies such as `seed1.bak` are never read as runs."""
    root = Path(results_dir)
    pattern = f"{task}/*/*/*/seed*/config.json" if task else "*/*/*/*/seed*/config.json"
    return [RunFolder(p.parent, p.parent.parent.name) for p in sorted(root.glob(pattern))
            if _SEED_FOLDER.fullmatch(p.parent.name)]


def _read(path: Path):
    return json.loads(path.read_text())
