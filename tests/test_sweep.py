"""Tests for studykit.sweep: 4 tiny runs on 2 CPU worker processes equal a sequential run, once each."""
import json
from pathlib import Path

import pytest

from studykit.grid import CPU_THREADS_PER_WORKER, cpu_grid_workers
from studykit.sweep import run_sweep
from studykit.config import RunConfig
from studykit.grid import run_grid

METRICS = ("train_loss", "eval_loss", "accuracy", "f1_macro")


def tiny_grid(results_dir, data_dir):
    return [RunConfig("tiny-bert", "restaurant_sup", seed=seed, epochs=1, batch_size=16, learning_rate=lr,
                      max_steps=3, evals_per_epoch=1, data_dir=data_dir, results_dir=str(results_dir))
            for lr in (1e-3, 1e-4) for seed in (1, 2)]


def test_sweep_matches_sequential_and_resumes(tmp_path, fixture_data):
    packed = tiny_grid(tmp_path / "packed", fixture_data)
    frame = run_sweep(packed + packed[:1], workers=2, threads_per_worker=1)  # one run listed twice

    assert len(frame) == 5 and (frame["status"] == "finished").all()
    assert frame["run_dir"].nunique() == 4
    assert frame.iloc[4]["run_dir"] == frame.iloc[0]["run_dir"]
    for config in packed:
        assert (config.run_dir / "summary.json").is_file()
    logs = "".join(p.read_text() for p in (tmp_path / "packed" / ".sweep").glob("worker*.log"))
    assert logs.count("): run ") == 4  # every run trained exactly once, the duplicate not again
    assert set(frame["worker"]) <= {0, 1}

    sequential = run_grid(tiny_grid(tmp_path / "sequential", fixture_data), workers=1)
    for metric in METRICS:  # deterministic on CPU with one thread per process: the same numbers
        assert list(frame[metric][:4]) == pytest.approx(list(sequential[metric]), rel=1e-6, abs=1e-7), metric

    # Resumable: finished runs are read back, no worker starts, the rows are the same.
    again = run_sweep(packed, workers=2, threads_per_worker=1)
    assert list(again["accuracy"]) == list(frame["accuracy"][:4])
    assert "worker" not in again or again["worker"].isna().all()


def test_sweep_records_a_failing_run_and_goes_on(tmp_path, fixture_data):
    good = tiny_grid(tmp_path, fixture_data)[0]
    bad = RunConfig("tiny-bert", "restaurant_sup", epochs=1, max_steps=1, batch_size=15, per_device_batch_size=4,
                    data_dir=fixture_data, results_dir=str(tmp_path))  # fails at its start, as set up
    frame = run_sweep([bad, good], workers=2, threads_per_worker=1)
    assert list(frame["status"]) == ["failed", "finished"]
    failed = json.loads((bad.run_dir / "failed.json").read_text())
    assert "not a multiple of per-device batch" in failed["error"] and failed["kind"] == "run"
    # Failed runs are skipped next time unless retry_failed=True.
    assert run_sweep([bad], workers=1)["status"][0] == "failed (skipped)"


def test_run_grid_packs_pending_runs_on_the_cores_by_default(tmp_path, fixture_data, monkeypatch):
    monkeypatch.delenv("GRID_WORKERS", raising=False)  # the suite runs grids in-process (conftest.py)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert cpu_grid_workers(pending=1) == 1 and cpu_grid_workers(pending=5) == 2 // CPU_THREADS_PER_WORKER
    configs = tiny_grid(tmp_path / "default", fixture_data)[:2]
    frame = run_grid(configs)
    if cpu_grid_workers(pending=2) > 1:  # packed: rows name their worker, worker logs under .sweep
        assert frame["worker"].nunique() == cpu_grid_workers(pending=2) and (tmp_path / "default" / ".sweep").is_dir()
    else:
        assert "worker" not in frame
    sequential = run_grid(tiny_grid(tmp_path / "sequential", fixture_data)[:2], workers=1)
    assert "worker" not in sequential
    for metric in METRICS:  # one thread per worker, one thread here (conftest.py): the same numbers
        assert list(frame[metric]) == pytest.approx(list(sequential[metric]), rel=1e-6, abs=1e-7), metric
    monkeypatch.setenv("GRID_WORKERS", "1")  # a user can say otherwise
    assert cpu_grid_workers(pending=5) == 1
