"""Results you can trust: the promises of the README's "What happens when …", one test each.

A run is what its folder says; corrupt files are named and the run redone; settings are checked up front;
two grids on one study share the work; a full disk or a read-only copy is handled. Every run is tiny-bert on
the fixture data, a few steps (~1-2 s on one thread).
"""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import studykit.grid as grid_module
import studykit.runs as runs
import studykit.training as training
from studykit.data import dataset_source
from studykit.grid import run_grid
from studykit.results import load_results
from studykit.statistics import summarize
from studykit.runs import RunFolder, clean_stale_temporaries
from studykit.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "data"
import grid  # noqa: E402  tests/scripts/grid.py, on sys.path through conftest.py
GRID_SCRIPT = Path(grid.__file__)


def tiny(results, data=FIXTURE, seed=1, **overrides):
    return grid.make_config(results, data, seed=seed, **{"max_steps": 3, **overrides})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study (seeds 1 and 2), trained once; tests work on copies of it."""
    results = tmp_path_factory.mktemp("study") / "results"
    frame = run_grid([tiny(results, seed=s) for s in (1, 2)], stop_on_error=True)
    assert list(frame["status"]) == ["finished"] * 2
    return results


@pytest.fixture
def copy_of(study, tmp_path):
    """A fresh copy of the finished study, and its configs."""
    results = tmp_path / "results"
    shutil.copytree(study, results)
    return results, [tiny(results, seed=s) for s in (1, 2)]


@pytest.fixture
def trained(monkeypatch):
    """The run folders actually trained (not read back from their summary)."""
    calls, real = [], training._train
    monkeypatch.setattr(training, "_train", lambda config, *rest: calls.append(config.run_dir) or real(config, *rest))
    return calls


@pytest.fixture
def data(tmp_path):
    """A writable copy of the fixture data."""
    shutil.copytree(FIXTURE, tmp_path / "data")
    return tmp_path / "data"


def read_json(path):
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------- 1. a run is fixed at its start

def test_an_edit_that_keeps_size_and_date_still_changes_the_run_folder(tmp_path, data):
    path = data / "restaurant" / "test.json"
    before = tiny(tmp_path, data).config_hash()
    stat, text = path.stat(), path.read_text()
    path.write_text(text.replace("great", "grand", 1))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same date, as `cp -p` keeps it
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert tiny(tmp_path, data).config_hash() != before


def test_data_edited_during_a_run_leaves_no_orphans_and_no_mislabelled_result(tmp_path, data, monkeypatch):
    results = tmp_path / "results"
    config = tiny(results, data)
    old_folder = config.run_dir
    real = training._train

    def edit_then_train(cfg, *rest):  # the folder is fixed; now someone rewrites the test split
        test = data / "restaurant" / "test.json"
        test.write_text(test.read_text().replace("great", "grand"))
        return real(cfg, *rest)
    monkeypatch.setattr(training, "_train", edit_then_train)
    frame = run_grid([config])
    monkeypatch.setattr(training, "_train", real)

    assert frame["status"][0] == "failed" and "DataChanged" in frame["error"][0]
    assert read_json(old_folder / "failed.json")["kind"] == "environment"
    run_files = {p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()
                 and ".cache" not in p.parts}
    prefix = old_folder.relative_to(results).as_posix()
    assert run_files == {f"{prefix}/config.json", f"{prefix}/failed.json"}  # nothing in any other folder

    again = run_grid([tiny(results, data)])  # the next grid trains the new data, in the new data's folder
    assert again["status"][0] == "finished" and Path(again["run_dir"][0]) != old_folder
    table = load_results(results)
    assert len(table) == 1 and Path(table["run_dir"][0]).parent.name == table["config_hash"][0]


def test_the_summary_records_its_config_hash_and_each_files_content_hash(copy_of):
    results, configs = copy_of
    summary = read_json(configs[0].run_dir / "summary.json")
    assert summary["config_hash"] == configs[0].run_dir.parent.name == configs[0].config_hash()
    assert summary["data_source"] == dataset_source("restaurant_sup", FIXTURE)


def test_a_run_whose_stored_hash_disagrees_with_its_folder_is_refused_by_name(copy_of):
    results, configs = copy_of
    impostor = configs[0].run_dir.parent.with_name("0123456789") / "seed1"
    shutil.copytree(configs[0].run_dir, impostor)  # e.g. a folder renamed by hand
    with pytest.warns(UserWarning, match=re.escape(f"refusing run {impostor}")):
        table = load_results(results)
    assert sorted(table["seed"]) == [1, 2] and str(impostor) not in set(table["run_dir"])


def test_a_seed_folder_copied_under_another_seeds_name_is_refused_and_retrained(copy_of, trained):
    results, configs = copy_of
    third = tiny(results, seed=3)
    shutil.copytree(configs[0].run_dir, third.run_dir)  # cp -r .../seed1 .../seed3
    with pytest.warns(UserWarning, match=re.escape(f"refusing run {third.run_dir}: its config.json says seed 1, "
                                                   "but its folder is seed3")):
        assert sorted(load_results(results)["seed"]) == [1, 2]
    with pytest.warns(UserWarning, match="refusing run"):
        frame = run_grid([third])
    assert frame["status"][0] == "finished" and trained == [third.run_dir]
    assert read_json(third.run_dir / "config.json")["seed"] == 3 and sorted(load_results(results)["seed"]) == [1, 2, 3]


def test_only_folders_named_exactly_seed_int_count(copy_of):
    results, configs = copy_of
    for copy in ("seed1 (copy)", "seed1.bak", "seed01x"):
        shutil.copytree(configs[0].run_dir, configs[0].run_dir.with_name(copy))
    assert sorted(load_results(results)["seed"]) == [1, 2]


# ----------------------------------------------------------------------------- 3. corrupt files

MERGE_CONFLICT = '<<<<<<< HEAD\n{"status": "finished", "accuracy": 0.5\n=======\n{"status": "finished"\n>>>>>>> other\n'


@pytest.mark.parametrize("name, content", [
    ("summary.json", MERGE_CONFLICT), ("summary.json", '{"status": "fini'), ("summary.json", "{}"),
    ("summary.json", "[]"), ("config.json", ""), ("metrics.jsonl", '{"step": 1, "spl'),
    ("predictions.json", "[0, 1,")])
def test_a_corrupt_result_file_is_named_and_the_next_grid_redoes_the_run(copy_of, trained, name, content):
    results, configs = copy_of
    bad = configs[0].run_dir / name
    bad.write_text(content)
    with pytest.warns(UserWarning, match=re.escape(str(bad))):
        table = load_results(results, include_failed=True)
    assert list(table["seed"]) == [2]  # the damaged run is not a result
    with pytest.warns(UserWarning, match=re.escape(str(bad))):
        frame = run_grid(configs)
    assert trained == [configs[0].run_dir]  # redone, not marked failed; the intact run is read back
    assert list(frame["status"]) == ["finished", "finished"]
    assert sorted(load_results(results)["seed"]) == [1, 2]


def test_an_unreadable_failure_record_is_named_and_the_grid_goes_on(tmp_path, trained):
    results = tmp_path / "results"
    configs = [tiny(results, seed=s) for s in (1, 2)]
    configs[0].run_dir.mkdir(parents=True)
    (configs[0].run_dir / "failed.json").write_text('{"status": "failed", "err')
    with pytest.warns(UserWarning, match=re.escape(str(configs[0].run_dir / "failed.json"))):
        frame = run_grid(configs)
    assert list(frame["status"]) == ["finished", "finished"] and len(trained) == 2


# ----------------------------------------------------------------------------- 4. settings checked up front

@pytest.mark.parametrize("dataset", [[], ["acl_sup", "acl_sup"], ("acl_sup", 3), 7])
def test_a_bad_dataset_list_is_refused_with_what_is_expected(dataset):
    with pytest.raises(ValueError, match="dataset must be a name or a non-empty list of distinct names"):
        RunConfig("tiny-bert", dataset)


@pytest.mark.parametrize("settings, message", [
    ({"seed": -1}, "seed must be >= 0"), ({"seed": "1"}, "seed must be an int"),
    ({"task": "/tmp/elsewhere"}, "task must be a plain name"), ({"task": ".."}, "task must be a plain name"),
    ({"max_length": 1}, "max_length must be an int >= 8")])
def test_settings_that_would_misfile_a_run_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        RunConfig("tiny-bert", "acl_sup", **settings)


def test_a_per_device_batch_that_does_not_divide_the_batch_says_which_would(tmp_path):
    frame = run_grid([tiny(tmp_path, batch_size=15, per_device_batch_size=4)])
    assert frame["status"][0] == "failed"
    assert "choose per_device_batch_size from [1, 3, 5, 15]" in frame["error"][0]


def test_no_run_folder_lies_outside_the_results_dir(tmp_path, monkeypatch):
    config = tiny(tmp_path / "results")
    monkeypatch.setattr(runs, "safe_name", lambda name: "../../..")  # were a name ever to escape the checks
    with pytest.raises(ValueError, match="outside results_dir"):
        RunFolder.for_config(config)


# ----------------------------------------------------------------------------- 6. two grids on one study

@pytest.mark.timeout(300)
def test_two_grids_on_one_study_train_each_run_once_and_both_end_with_the_full_table(tmp_path):
    results = tmp_path / "results"
    command = [sys.executable, "-u", str(GRID_SCRIPT), str(results), str(FIXTURE), "1,2,3,4"]
    procs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=280)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [int(s) for out in outputs for s in re.findall(r"tiny-bert on restaurant_sup, seed (\d+): \d+ train", out)]
    assert sorted(trained) == [1, 2, 3, 4], outputs  # each run trained by exactly one of the two
    for out in outputs:
        assert "grid done; statuses 1:finished,2:finished,3:finished,4:finished" in out
    assert not list(results.rglob(".claim"))


# Claims (a lock that dies with its process, copied claims, the grid's own claim, the race): tests/test_claims.py


# ----------------------------------------------------------------------------- 7. disk full, read-only

class _DiskFull:
    """A value whose serialization hits a full disk, inside the real atomic writer."""
    def __str__(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_run_that_failed_for_lack_of_space_names_the_file_and_is_retried_by_the_next_grid(
        tmp_path, trained, monkeypatch):
    config = tiny(tmp_path)
    real = runs.write_json_atomic
    monkeypatch.setattr(runs, "write_json_atomic", lambda path, obj, lines=False: real(
        path, [_DiskFull()] if Path(path).name == "predictions.json" else obj, lines))
    frame = run_grid([config])
    monkeypatch.setattr(runs, "write_json_atomic", real)  # space is back

    record = read_json(config.run_dir / "failed.json")
    assert record["kind"] == "environment" and record["errno"] == errno.ENOSPC
    assert str(config.run_dir / "predictions.json") in record["error"] == frame["error"][0]
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    again = run_grid([config])  # no retry_failed: the failure was the disk's, not the run's
    assert again["status"][0] == "finished" and trained == [config.run_dir] * 2


def test_a_failure_that_cannot_be_recorded_does_not_stop_the_grid(tmp_path, monkeypatch, capsys):
    def disk_full(folder, reason):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder.failed_path))
    monkeypatch.setattr(RunFolder, "write_failed", disk_full)
    bad, good = tiny(tmp_path, batch_size=15, per_device_batch_size=4), tiny(tmp_path, seed=2)  # bad fails at start
    frame = run_grid([bad, good])
    assert list(frame["status"]) == ["failed", "finished"]
    assert f"could not record the failure: [Errno 28] No space left on device: '{bad.run_dir / 'failed.json'}'" \
        in capsys.readouterr().out


def test_stale_temporary_files_are_removed_when_a_grid_starts(tmp_path):
    results = tmp_path / "results"
    dead = 2 ** 22 + 7  # above the kernel's pid limit: no such process
    stale = [results / "task2" / f".summary.json.{dead}.tmp", results / ".cache" / "tokenized" / f"abc.tmp{dead}",
             results / ".cache" / "models" / f"tiny-bert.tmp{dead}"]
    fresh = results / "task2" / f".config.json.{dead}.tmp"  # might be another host's write in progress
    live = results / "task2" / f".metrics.jsonl.{os.getpid()}.tmp"
    for path in stale + [fresh, live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith(".tmp"):
            path.write_text("x")
        else:  # save_to_disk and save_pretrained write folders
            path.mkdir()
            (path / "part").write_text("x")
    for path in stale + [live]:
        os.utime(path, (time.time() - 2 * runs.STALE_TEMP_S,) * 2)
    run_grid([tiny(results)])
    assert [p.exists() for p in stale] == [False] * 3
    assert fresh.exists() and live.exists()
    assert clean_stale_temporaries(results) == []


def test_a_read_only_results_folder_renders_a_finished_study(copy_of, monkeypatch):
    results, configs = copy_of

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")
    # chmod keeps a normal user out; root writes anyway, so every writer refuses too
    for name in ("check_writable", "write_json_atomic", "clean_stale_temporaries"):
        monkeypatch.setattr(runs, name, refuse)
        monkeypatch.setattr(grid_module, name, refuse, raising=False)
    monkeypatch.setattr(RunFolder, "claim", refuse)
    modes = {p: p.stat().st_mode for p in [results, *results.rglob("*")]}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        frame = run_grid(configs)
        table = load_results(results)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert list(frame["status"]) == ["finished", "finished"] and sorted(table["seed"]) == [1, 2]


# ----------------------------------------------------------------------------- 9. merged datasets

def test_a_merged_dataset_run_sits_in_tables_beside_the_others(copy_of):
    results, configs = copy_of
    merged = dict(max_steps=2, data_dir=str(FIXTURE), results_dir=str(results), num_threads=1, batch_size=16)
    frame = run_grid([RunConfig("tiny-bert", ["restaurant_sup", "acl_sup"], **merged), *configs])
    assert frame["dataset"][0] == "restaurant_sup+acl_sup" and (frame["status"] == "finished").all()
    table = summarize(load_results(results))
    assert set(table.index.get_level_values("dataset")) == {"restaurant_sup", "restaurant_sup+acl_sup"}
