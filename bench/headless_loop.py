"""Proof loop for "headless never hangs": execute notebooks N times with the README's command while busy
processes load the CPU, with a time limit per try, and count the tries that hung.

    python bench/headless_loop.py --tries 20                         # the three notebooks, 2 busy processes
    python bench/headless_loop.py task2_finetune.ipynb --tries 2 --limit-s 600

The command is the README's first-look command, verbatim (no --ExecutePreprocessor.timeout: a hang must
show as a hang), run from the repository root; the executed copies go to runs/ (git-ignored). PROGRESS is
left unset unless given with --env, so the front-end detection is what is tested. A try that passes the
limit is killed with its whole process group (kernel included) and counted as a hang. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_COMMAND = "jupyter nbconvert --to notebook --execute {notebook} --output-dir runs/"
NOTEBOOKS = ["task2_finetune.ipynb", "task3_adapter.ipynb", "memory_estimate.ipynb"]


def start_busy(n: int) -> list[subprocess.Popen]:
    """n processes that each keep one core busy (the load of a shared node)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_once(command: str, env: dict, limit_s: float) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(shlex.split(command), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=limit_s)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # nbconvert and its kernel
        output, _ = proc.communicate()
        hung = True
    seconds = time.perf_counter() - start
    return {"hung": hung, "exit_code": None if hung else proc.returncode, "seconds": round(seconds, 1),
            "tail": "" if (not hung and proc.returncode == 0) else output[-1500:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", default=NOTEBOOKS)
    parser.add_argument("--tries", type=int, default=20, help="executions per notebook (default 20)")
    parser.add_argument("--limit-s", type=float, default=600, help="a try longer than this is a hang (default 600)")
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside it (default 2)")
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="extra environment, e.g. PROFILE=fast (PROGRESS is unset unless given here)")
    parser.add_argument("--command", default=README_COMMAND, help=f"default: {README_COMMAND!r}")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "PROGRESS"}
    env.update(dict(item.split("=", 1) for item in args.env))
    busy = start_busy(args.busy)
    report = {"command": args.command, "tries": args.tries, "limit_s": args.limit_s, "busy": args.busy,
              "env": args.env, "notebooks": {}}
    try:
        for notebook in args.notebooks:
            tries = []
            for i in range(args.tries):
                result = run_once(args.command.format(notebook=notebook), env, args.limit_s)
                tries.append(result)
                state = "HUNG" if result["hung"] else f"exit {result['exit_code']}"
                print(f"{notebook} try {i + 1}/{args.tries}: {state} in {result['seconds']} s", flush=True)
            report["notebooks"][notebook] = {
                "hangs": sum(t["hung"] for t in tries), "errors": sum(bool(t["exit_code"]) for t in tries),
                "seconds": [t["seconds"] for t in tries],
                "failures": [t["tail"] for t in tries if t["tail"]][:2]}
    finally:
        for p in busy:
            p.kill()
            p.wait()
    report["hangs"] = sum(n["hangs"] for n in report["notebooks"].values())
    report["errors"] = sum(n["errors"] for n in report["notebooks"].values())
    print(json.dumps(report))
    return 1 if report["hangs"] or report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
