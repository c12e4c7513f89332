"""The Slurm recipe without Slurm: cluster/slurm_study.sh with stand-ins for accelerate, nvidia-smi, scontrol
and jupyter on PATH (they log their arguments and the offline variables they see); and the GPU check's
CPU dry run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "cluster" / "slurm_study.sh"

STUB = """#!/bin/bash
echo "$(basename "$0") $* | HF_HUB_OFFLINE=$HF_HUB_OFFLINE DATA_DIR=$DATA_DIR HF_HOME=$HF_HOME" >> "$STUB_LOG"
{extra}
"""


def _stubs(tmp_path, accelerate_extra="", gpus=8):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    extras = {"accelerate": accelerate_extra, "scontrol": "", "jupyter": "",
              "nvidia-smi": "\n".join(f'echo "GPU {i}: stand-in"' for i in range(gpus))}
    for name, extra in extras.items():
        path = bin_dir / name
        path.write_text(STUB.format(extra=extra))
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(tmp_path / "log"),
           "SLURM_JOB_ID": "4242", "SLURM_SUBMIT_DIR": str(ROOT), "VENV": str(tmp_path / "no-venv"),
           "HF_HOME": str(tmp_path / "hf"), "DATA_DIR": str(tmp_path / "data"),
           "REPORT_DIR": str(tmp_path / "report")}
    env.pop("HF_HUB_OFFLINE", None)
    return env


def test_slurm_script_trains_both_tasks_offline_then_builds_the_report_elsewhere(tmp_path):
    env = _stubs(tmp_path)
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "log").read_text().splitlines()
    calls = [line.split(" | ")[0] for line in log if not line.startswith("nvidia-smi")]
    data = str(tmp_path / "data")
    assert calls == [
        f"accelerate launch --multi_gpu --num_processes 8 train.py task2 --profile full --data-dir {data}",
        f"accelerate launch --multi_gpu --num_processes 8 train.py task3 --profile full --data-dir {data}",
        f"jupyter nbconvert --to notebook --execute task2_finetune.ipynb task3_adapter.ipynb --output-dir "
        f"{tmp_path / 'report'} --ExecutePreprocessor.timeout=-1"]
    assert all(f"HF_HUB_OFFLINE=1 DATA_DIR={data} HF_HOME={tmp_path / 'hf'}" in line for line in log[1:])
    assert "--inplace" not in SCRIPT.read_text()


def test_slurm_script_requeues_itself_on_the_time_limit_signal(tmp_path):
    # the first grid "trains" until it is stopped
    env = _stubs(tmp_path, accelerate_extra='trap "echo stopped >> $STUB_LOG; exit 143" TERM\n'
                                            'while true; do sleep 0.1; done')
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 30
        while "accelerate" not in (tmp_path / "log").read_text() if (tmp_path / "log").exists() else True:
            assert time.time() < deadline, "the grid never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR1)   # what `#SBATCH --signal=B:USR1@300` sends
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    log = (tmp_path / "log").read_text()
    assert "scontrol requeue 4242" in log and "stopped" in log
    assert "task3" not in log and "jupyter" not in log   # nothing after the requeue
    assert "requeueing job 4242" in out


def test_one_gpu_runs_without_accelerate_multi_gpu(tmp_path):
    env = _stubs(tmp_path, gpus=1)
    (tmp_path / "bin" / "python").write_text(STUB.format(extra=""))
    (tmp_path / "bin" / "python").chmod(0o755)
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "python train.py task2 --profile full" in (tmp_path / "log").read_text()


def test_gpu_check_refuses_cpu_without_dry_run():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr


@pytest.mark.timeout(400)
def test_gpu_check_dry_run_reports_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--pack-counts", "1",
                           "2", "--pack-batch", "4", "--pack-seq-len", "16", "--out", str(out)],
                          capture_output=True, text=True, timeout=380, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line == json.loads(out.read_text()) and line["dry_run"] and line["gpu"] is None
    assert [(r["precision"], r["compile"]) for r in line["speed"]] == [("fp32", False), ("tf32", False), ("bf16", False)]
    assert all(r["samples_per_s"] > 0 and 0 < r["mfu"] < 1 for r in line["speed"])
    assert len(line["memory"]) == 4
    for row in line["memory"]:   # measured and estimated bytes are both there and of the same order
        assert 0.5 < row["estimate_over_measured_allocated"] < 2
    assert [r["processes"] for r in line["packing"]] == [1, 2]
    assert all(r["samples_per_s_total"] > 0 for r in line["packing"])
    assert len(line["packing"][1]["samples_per_s_each"]) == 2 and line["skipped_for_time"] == []


def test_gpu_check_skips_what_is_left_past_its_budget():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--budget-s", "0",
                           "--pack-counts", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["speed"] == [] and line["memory"] == [] and line["packing"] == []
    assert line["skipped_for_time"] == ["speed fp32 compile=False", "speed tf32 compile=False",
                                        "speed bf16 compile=False", "memory", "packing 1"]
