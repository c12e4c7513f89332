"""Two CPU processes (gloo) against one, with the same global batch (16 = 2 x 8) and dropout 0.

The test split has 47 examples and evaluation batches of 5, so the two processes get a ragged last
batch that Accelerate pads with duplicates: `gather_for_metrics` must drop them (every example once).

Tolerance: the two runs do the same arithmetic in a different order (the gradient is the mean of two
all-reduced half-batch means instead of one 16-example mean, and each half is padded to its own
length, so matmul shapes differ). In fp32 that changes results at ~1e-7 relative per step; over 12
AdamW steps it stays far below 1e-4, the tolerance used for losses here. Predictions may only flip
where a logit margin is below that noise, so accuracy may differ by at most one example.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from studykit.training import train_run

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "data"
import grid  # noqa: E402  tests/scripts/grid.py, on sys.path through conftest.py
GRID_SCRIPT = Path(grid.__file__)

TEST_SIZE = 47
LOSS_TOLERANCE = 1e-4
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PROGRESS": "text", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory):
    """The restaurant fixture with 47 test examples: not divisible by 2 processes or by the eval batch of 5."""
    data = tmp_path_factory.mktemp("odd_data")
    (data / "restaurant").mkdir()
    (data / "restaurant" / "train.json").write_text((FIXTURE / "restaurant" / "train.json").read_text())
    test = json.loads((FIXTURE / "restaurant" / "test.json").read_text())
    (data / "restaurant" / "test.json").write_text(json.dumps(dict(list(test.items())[:TEST_SIZE])))
    return data


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, odd_data):
    config = grid.make_config(tmp_path_factory.mktemp("one_process"), odd_data)
    train_run(config)
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_launcher(command, env, cwd, timeout):
    """Run a launcher in its own process group; on timeout kill the whole group (workers forked by it
    would otherwise outlive the test, stuck at a barrier). Returns (exit code, stdout + stderr)."""
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{command[0]} hung for {timeout} s (killed):\n{output[-4000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of a launcher that exited
        except ProcessLookupError:
            pass
    return proc.returncode, output


def read_log(config):
    return [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_two_process_run_is_correct(config, reference):
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["num_processes"] == 2, "the launch silently ran one process"
    assert summary["gradient_accumulation"] == 1 and summary["eval_examples"] == TEST_SIZE
    # Only the main process wrote: one set of run files, no temporary or probe files from rank 1.
    root = Path(config.results_dir)
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert written == sorted(str(config.run_dir.relative_to(root) / name) for name in os.listdir(reference.run_dir))
    predictions = json.loads((config.run_dir / "predictions.json").read_text())
    reference_predictions = json.loads((reference.run_dir / "predictions.json").read_text())
    assert len(predictions) == TEST_SIZE and sum(a != b for a, b in zip(predictions, reference_predictions)) <= 1
    assert not [p for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".write-test")]

    ours, theirs = read_log(config), read_log(reference)
    assert [(r["step"], r["split"]) for r in ours] == [(r["step"], r["split"]) for r in theirs]
    for mine, ref in zip(ours, theirs):
        if mine["split"] == "test":
            assert mine["eval_examples"] == TEST_SIZE  # every test example exactly once, at every evaluation
            assert mine["eval_loss"] == pytest.approx(ref["eval_loss"], abs=LOSS_TOLERANCE)
            assert abs(mine["accuracy"] - ref["accuracy"]) <= 1 / TEST_SIZE + 1e-12
        else:
            assert mine["loss"] == pytest.approx(ref["loss"], abs=LOSS_TOLERANCE)
            assert mine["lr"] == pytest.approx(ref["lr"], rel=1e-12)  # the schedule counts optimizer steps


@pytest.mark.timeout(240)
def test_accelerate_launch_two_cpu_processes_match_one_process(tmp_path, odd_data, one_process):
    """The shell path the README documents (see the pitfall: without --multi_gpu it starts ONE process)."""
    two = grid.make_config(tmp_path / "results", odd_data)
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               str(GRID_SCRIPT), two.results_dir, str(odd_data), "1"]
    code, output = run_launcher(command, {**ENV, "ACCELERATE_USE_CPU": "1"}, tmp_path, timeout=220)
    assert code == 0, output[-4000:]
    assert "rank 0 of 2: grid done" in output and "rank 1 of 2: grid done" in output
    headers = re.findall(r"\[task2\] tiny-bert on .*", output)  # after a progress bar's \r, maybe
    # the run's two header lines (its precision, then its data and batch), from the main process only
    assert len(headers) == 2 and "precision" in headers[0] and "batch 16 = 2 proc x 8 x 1 accum" in headers[1]
    assert_two_process_run_is_correct(two, one_process)


LAUNCH_GRID = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import grid
from studykit.grid import launch_grid
results, data, broken = sys.argv[3:6]
launch_grid([grid.make_config(results, data, seed=3, batch_size=15, per_device_batch_size=4),
             grid.make_config(results, broken, seed=4), *grid.make_grid(results, data, seeds=(1, 2))],
            num_processes=2)
"""


@pytest.mark.timeout(240)
def test_launch_grid_two_processes_from_a_fresh_interpreter(tmp_path, odd_data, one_process):
    """The notebook path: notebook_launcher in an interpreter where no Accelerator exists yet, on a machine
    where another job holds Accelerate's default port 29500 (two notebooks on one node). The grid starts
    with a batch the processes cannot split and a bad data line: both processes must fail those runs together (no deadlock
    at a barrier only one of them reached) and go on to train the others."""
    results, broken = tmp_path / "results", tmp_path / "broken"
    shutil.copytree(odd_data, broken)
    test_file = broken / "restaurant" / "test.json"
    test_file.write_text(test_file.read_text()[:-40])
    with socket.socket() as other_job:
        try:
            other_job.bind(("127.0.0.1", 29500))
            other_job.listen()
        except OSError:
            pass  # already taken by someone else: the same situation
        code, output = run_launcher([sys.executable, "-c", LAUNCH_GRID, str(ROOT), str(GRID_SCRIPT.parent),
                                     str(results), str(odd_data), str(broken)], ENV, tmp_path, timeout=220)
    assert code == 0, output[-4000:]
    bad_model = grid.make_config(results, odd_data, seed=3, batch_size=15, per_device_batch_size=4)
    bad_data = grid.make_config(results, broken, seed=4)
    assert "not a multiple of per-device batch" in json.loads((bad_model.run_dir / "failed.json").read_text())["error"]
    assert f"DataError: {test_file}:" in json.loads((bad_data.run_dir / "failed.json").read_text())["error"]
    first, second = grid.make_grid(results, odd_data, seeds=(1, 2))
    # one data header per trained run: the main process only
    assert len(re.findall(r"\[task2\] tiny-bert on restaurant_sup, seed \d+: \d+ train", output)) == 2
    for config in (first, second):
        summary = json.loads((config.run_dir / "summary.json").read_text())
        assert summary["num_processes"] == 2 and summary["eval_examples"] == TEST_SIZE
        assert sorted(os.listdir(config.run_dir)) == sorted(os.listdir(one_process.run_dir))
        assert len(json.loads((config.run_dir / "predictions.json").read_text())) == TEST_SIZE
    for config in (bad_model, bad_data):
        assert sorted(os.listdir(config.run_dir)) == ["config.json", "failed.json"]
    written = [p for p in results.rglob("*") if p.is_file() and ".cache" not in p.parts]
    assert len(written) == 2 * len(os.listdir(one_process.run_dir)) + 2 * 2
    assert not [p for p in results.rglob("*") if ".tmp" in p.name or p.name.startswith(".write-test")]
    log = read_log(first)
    assert [r["step"] for r in log] == [r["step"] for r in read_log(one_process)]
    for mine, ref in zip(log, read_log(one_process)):
        key = "eval_loss" if mine["split"] == "test" else "loss"
        assert mine[key] == pytest.approx(ref[key], abs=LOSS_TOLERANCE)
