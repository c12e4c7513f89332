"""Race harness for run claims: several grids on one results folder, with delays injected into every step of
the claim, must train each run exactly once.

    python bench/claim_race.py                        # 1,000 trials per case, 2 and 3 grids, 5 ms delays
    python bench/claim_race.py --trials 50 --impl file   # the fallback (plain claim files), for comparison

No training: each grid process does what `run_grid` does around a run, cheaply: look whether the run is done,
claim it (`RunFolder.claim`), look again, "train" (append its pid to `trained`, sleep a moment), write the done
marker, release; a run claimed by another process is waited on (polled) as `run_grid` does. Every grid meets
every trial at a barrier, so they arrive together. Each step of the claim (os.open, os.fdopen, os.link,
os.replace, os.unlink, os.close, fcntl.flock) sleeps a random 0..delay ms first, as under preemption.

Cases: 2 and 3 grids, each on runs with no claim, an empty `.claim` (a process killed while writing it, an
hour old) and a stale one (a dead process's, or a collaborator's copied in, recorded three days ago).
A trial is a double training if `trained` has two lines, a lost run if it has none. Writes
bench/results/<date>_claim_race.txt with `--write` and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEAD_PID = 2 ** 22 + 7  # above the kernel's pid limit: no such process
STATES = ("none", "empty", "stale")


def _delayed(fn, delay_s: float):
    def wrapper(*args, **kwargs):
        time.sleep(random.uniform(0, delay_s))
        return fn(*args, **kwargs)
    return wrapper


def _inject_delays(delay_s: float) -> None:
    """Sleep up to `delay_s` before every step the claim takes (this process only)."""
    import studykit.locks as locks
    for name in ("open", "fdopen", "link", "replace", "unlink", "close"):
        setattr(os, name, _delayed(getattr(os, name), delay_s))
    if locks.fcntl is not None:
        locks.fcntl.flock = _delayed(locks.fcntl.flock, delay_s)


def _grid(root: str, trials: int, delay_s: float, impl: str, barrier, seed: int) -> None:
    """One grid process: every trial's run, as run_grid handles it (see the module docstring)."""
    import warnings

    import studykit.locks as locks
    from studykit.runs import RunFolder
    random.seed(seed)
    if impl == "file":
        locks.fcntl = None  # as on a file system without locks: the fallback's plain claim files
        warnings.simplefilter("ignore")
    _inject_delays(delay_s)
    for t in range(trials):
        folder = RunFolder(Path(root) / f"t{t}" / "seed1")
        done = folder.path / "done"
        barrier.wait()
        while not done.exists():
            if not folder.claim():
                time.sleep(0.001)  # another grid trains it: wait, as run_grid does (it polls every 2 s)
                continue
            try:
                if not done.exists():  # finished by another grid between our look and our claim
                    with open(folder.path / "trained", "a") as f:
                        f.write(f"{os.getpid()}\n")
                    time.sleep(random.uniform(0, delay_s))  # "training"
                    marker = folder.path / f".done.{os.getpid()}.tmp"  # atomic, as summary.json (no fsync: cheap)
                    marker.write_text("finished")
                    os.replace(marker, done)
            finally:
                folder.release()
            break


def _prepare(root: Path, trials: int, state: str) -> None:
    """Each trial's run folder in its starting `state`."""
    three_days_ago = time.time() - 3 * 24 * 3600
    for t in range(trials):
        path = root / f"t{t}" / "seed1"
        path.mkdir(parents=True)
        claim = path / ".claim"
        if state == "empty":
            claim.write_text("")
            os.utime(claim, (time.time() - 3600,) * 2)
        elif state == "stale":  # alternately a dead local process's and a collaborator's copied in
            host = socket.gethostname() if t % 2 else "another-laptop"
            claim.write_text(json.dumps({"pid": DEAD_PID if t % 2 else 4242, "host": host, "time": three_days_ago}))


def run_case(grids: int, state: str, trials: int, delay_s: float, impl: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix="claim_race_"))
    try:
        _prepare(root, trials, state)
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(grids)
        start = time.perf_counter()
        procs = [ctx.Process(target=_grid, args=(str(root), trials, delay_s, impl, barrier, 1000 * grids + g))
                 for g in range(grids)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - start
        counts = []
        for t in range(trials):
            trained = root / f"t{t}" / "seed1" / "trained"
            counts.append(len(trained.read_text().split()) if trained.exists() else 0)
        left = sum(1 for t in range(trials) if (root / f"t{t}" / "seed1" / ".claim").exists())
        return {"impl": impl, "grids": grids, "start": state, "trials": trials,
                "double": sum(c > 1 for c in counts), "lost": sum(c == 0 for c in counts),
                "claims_left": left, "exit_codes": sorted({p.exitcode for p in procs}),
                "seconds": round(elapsed, 1)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--grids", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--states", nargs="+", default=list(STATES), choices=STATES)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--impl", choices=["lock", "file"], default="lock",
                        help="lock: RunFolder.claim as shipped (flock); file: its fallback without locks")
    parser.add_argument("--write", action="store_true", help="append the result to bench/results/<date>_claim_race.txt")
    args = parser.parse_args(argv)
    header = (f"claim race: {time.strftime('%Y-%m-%d %H:%M')}, CPU {_cpu()} ({os.cpu_count()} cores), "
              f"{platform.system()} {platform.release()}, python {platform.python_version()}; "
              f"impl {args.impl}, delays 0..{args.delay_ms:g} ms at each claim step")
    lines, results = [header], []
    for grids in args.grids:
        for state in args.states:
            r = run_case(grids, state, args.trials, args.delay_ms / 1000, args.impl)
            results.append(r)
            lines.append(f"  {r['grids']} grids, start claim {r['start']:5}: {r['trials']} trials, "
                         f"{r['double']} trained twice, {r['lost']} never trained, {r['claims_left']} claims left, "
                         f"exit codes {r['exit_codes']}, {r['seconds']} s")
            print(lines[-1], flush=True)
    total = sum(r["double"] + r["lost"] for r in results)
    lines.append(f"  total: {sum(r['trials'] for r in results)} trials, {total} trained twice or never")
    print(lines[0])
    print(lines[-1])
    if args.write:
        out = ROOT / "bench" / "results" / f"{time.strftime('%Y-%m-%d')}_claim_race.txt"
        with out.open("a") as f:
            f.write("\n".join(lines) + "\n\n")
        print(f"appended to {out}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
