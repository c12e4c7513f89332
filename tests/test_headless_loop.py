"""The headless proof loop itself: a notebook that finishes counts as ok, one that outlives the limit is
killed (kernel included) and counted as a hang."""
import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, code: str) -> Path:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), path)
    return path


def test_loop_counts_hangs_and_successes(tmp_path):
    ok = _notebook(tmp_path / "ok.ipynb", "print('fine')")
    pid_file = tmp_path / "kernel.pid"
    hang = _notebook(tmp_path / "hang.ipynb", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                              "time.sleep(600)")
    command = f"jupyter nbconvert --to notebook --execute {{notebook}} --output-dir {tmp_path / 'out'}"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "headless_loop.py"), str(ok), str(hang),
                           "--tries", "1", "--busy", "1", "--limit-s", "25", "--command", command],
                          capture_output=True, text=True, timeout=240)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 1
    assert report["notebooks"][str(ok)] == {"hangs": 0, "errors": 0, "seconds": report["notebooks"][str(ok)]["seconds"],
                                            "failures": []}
    assert report["notebooks"][str(hang)]["hangs"] == 1 and report["hangs"] == 1
    assert (tmp_path / "out" / "ok.ipynb").is_file()
    kernel = int(pid_file.read_text())
    for _ in range(50):   # the kernel notices its parent's death within a few seconds
        if not Path(f"/proc/{kernel}").exists() or "zombie" in _state(kernel):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the hung try's kernel (pid {kernel}) is still running")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"
