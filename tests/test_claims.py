"""Claims the OS keeps: a run is claimed by a lock that dies with its process, so a killed process, a copied
`.claim` or a merged branch never holds a run, and a grid never waits on its own process. One test per case of
the README's "What happens when …"; the race itself is bench/claim_race.py (a short run of it here).
"""
import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import studykit.attempt as attempt_module
import studykit.locks as locks
from studykit.grid import run_grid
from studykit.runs import RunFolder

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "data"
import grid  # noqa: E402  tests/scripts/grid.py, on sys.path through conftest.py

THREE_DAYS_AGO = time.time() - 3 * 24 * 3600
# Another process that takes the lock of a claim file the way RunFolder.claim does, and keeps it until killed.
HOLD_LOCK = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
             "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)")


def tiny(results, seed=1, **overrides):
    return grid.make_config(results, FIXTURE, seed=seed, **{"max_steps": 3, **overrides})


@pytest.fixture
def trained(monkeypatch):
    """The run folders actually trained (not read back from their summary)."""
    import studykit.training as training
    calls, real = [], training._train

    def spy(config, *rest):
        calls.append(config.run_dir)
        return real(config, *rest)
    monkeypatch.setattr(training, "_train", spy)
    return calls


def hold_lock(path: Path) -> subprocess.Popen:
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


@pytest.mark.parametrize("content", [
    {"pid": 4242, "host": "another-laptop", "time": THREE_DAYS_AGO},   # a collaborator's, copied or merged in
    {"pid": 2 ** 22 + 7, "host": socket.gethostname(), "time": time.time()},   # a dead process's, just now
    {"pid": 1, "host": socket.gethostname(), "time": time.time()},   # a live process's that holds no lock
    "",   # a process killed while writing it
], ids=["copied-from-another-host", "dead-process", "live-process-without-lock", "empty"])
def test_a_claim_file_without_a_lock_holds_nothing(tmp_path, content):
    folder = RunFolder.for_config(tiny(tmp_path))
    folder.path.mkdir(parents=True)
    folder.claim_path.write_text(content if isinstance(content, str) else json.dumps(content))  # mtime: now
    assert folder.claim()
    assert json.loads(folder.claim_path.read_text())["pid"] == os.getpid()
    folder.release()
    assert not folder.claim_path.exists()


def test_a_grid_trains_a_run_whose_claim_was_copied_in_at_once(tmp_path, trained):
    config = tiny(tmp_path)
    folder = RunFolder.for_config(config)
    folder.path.mkdir(parents=True)
    folder.claim_path.write_text(json.dumps({"pid": 4242, "host": "another-laptop", "time": THREE_DAYS_AGO}))
    start = time.monotonic()
    frame = run_grid([config])
    assert frame["status"][0] == "finished" and trained == [config.run_dir]
    assert time.monotonic() - start < 60  # trained, not waited on (the old heuristic waited up to 24 h)
    assert not folder.claim_path.exists()


def test_a_claim_held_by_this_process_is_never_waited_on(tmp_path, trained):
    config = tiny(tmp_path)
    folder = RunFolder.for_config(config)
    assert folder.claim()  # as if a KeyboardInterrupt hit between a grid's claim and its try
    frame = run_grid([config])  # the cell runs again, in the same process
    assert frame["status"][0] == "finished" and trained == [config.run_dir]
    assert not folder.claim_path.exists()


def test_a_live_lock_is_respected_and_dies_with_its_process(tmp_path):
    folder = RunFolder.for_config(tiny(tmp_path))
    holder = hold_lock(folder.claim_path)
    try:
        assert not folder.claim()  # another live process holds it
        folder.release()  # not ours: left alone
        assert folder.claim_path.exists()
    finally:
        stop(holder)
    assert folder.claim()  # its process is gone, and its lock with it
    folder.release()


@pytest.mark.timeout(120)
def test_a_grid_waits_for_a_run_claimed_elsewhere_and_takes_it_over_if_that_process_dies(
        tmp_path, trained, monkeypatch):
    monkeypatch.setattr(attempt_module, "WAIT_POLL_S", 0.2)
    configs = [tiny(tmp_path, seed=s) for s in (1, 2)]
    holder = hold_lock(RunFolder.for_config(configs[0]).claim_path)
    threading.Timer(3.0, lambda: stop(holder)).start()  # the other process dies mid-run
    try:
        frame = run_grid(configs)
    finally:
        stop(holder)
    assert trained == [configs[1].run_dir, configs[0].run_dir]  # its own run first, then the abandoned one
    assert list(frame["status"]) == ["finished", "finished"]


def test_claim_files_are_git_ignored():
    for name in (".claim", f".claim.stale.{os.getpid()}"):
        path = f"results/reference/task2/acl_sup/all-minilm-l6-v2/0123456789/seed1/{name}"
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} is not git-ignored"


def test_without_file_locks_claims_fall_back_to_files_and_say_so(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    monkeypatch.setattr(locks, "_NO_LOCKS_ON", set())
    a, b = (RunFolder.for_config(tiny(tmp_path, seed=s)) for s in (1, 2))
    with pytest.warns(UserWarning, match="has no file locks .*claims fall back to .claim files"):
        assert a.claim()
    assert a.claim()  # this process's own claim: never waited on
    b.path.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live process on this host: respected; the same claim recorded three days ago: taken over
        b.claim_path.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "time": time.time()}))
        assert not b.claim()
        b.claim_path.write_text(json.dumps({"pid": sleeper.pid, "host": "another-laptop", "time": THREE_DAYS_AGO}))
        assert b.claim()  # judged by the time it records, not by the file's mtime (now)
    finally:
        stop(sleeper)
    for folder in (a, b):
        folder.release()
        assert not folder.claim_path.exists()


@pytest.mark.timeout(240)
def test_the_race_harness_finds_no_double_training(tmp_path):
    # A short run of bench/claim_race.py (its committed result: 1,000 trials per case, in bench/results/).
    sys.path.insert(0, str(ROOT))
    from bench import claim_race
    results = claim_race.main(["--trials", "20", "--grids", "2", "3", "--states", "empty", "stale"])
    assert [(r["double"], r["lost"], r["claims_left"], r["exit_codes"]) for r in results] == [(0, 0, 0, [0])] * 4
