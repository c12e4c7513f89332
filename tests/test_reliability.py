"""Reliability of the training engine: kills, failures, determinism, bad input, where files go.

Every test trains tiny-bert on the fixture data (~1-3 s a run on one thread). One uninterrupted grid
(`reference_grid`, seeds 1-3) is trained once per session; the other tests compare against it.
"""
import gc
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
import torch

import studykit.training as training
from studykit.data import DataError
from studykit.modeling import build_tiny_model, load_model_and_tokenizer
from studykit.runs import safe_name
from studykit.results import load_results
from studykit.config import RunConfig
from studykit.grid import run_grid
from studykit.training import train_run

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "data"
import grid  # noqa: E402  tests/scripts/grid.py, on sys.path through conftest.py
GRID_SCRIPT = Path(grid.__file__)

RUN_FILES = {"config.json", "metrics.jsonl", "summary.json"}  # at least; failed.json never beside them
FINAL_METRICS = ("accuracy", "f1_macro", "f1_micro", "eval_loss", "train_loss", "eval_examples", "steps")


@pytest.fixture(scope="session")
def reference_grid(tmp_path_factory):
    """Seeds 1-3 trained without interruption, in this process."""
    configs = grid.make_grid(tmp_path_factory.mktemp("reference"), FIXTURE)
    frame = run_grid(configs, stop_on_error=True)
    assert list(frame["status"]) == ["finished"] * 3
    return configs


@pytest.fixture
def trained(monkeypatch):
    """Records the run folder of every run that is actually trained (not loaded from its summary)."""
    calls = []
    real = training._train

    def spy(config, *rest):
        calls.append(config.run_dir)
        return real(config, *rest)
    monkeypatch.setattr(training, "_train", spy)
    return calls


def read_json(path):
    return json.loads(Path(path).read_text())


def assert_same_results(config, reference):
    """Bitwise equal metrics logs and equal final metrics (CPU, one thread, fp32: deterministic)."""
    assert (config.run_dir / "metrics.jsonl").read_text() == (reference.run_dir / "metrics.jsonl").read_text()
    ours, theirs = read_json(config.run_dir / "summary.json"), read_json(reference.run_dir / "summary.json")
    assert {k: ours[k] for k in FINAL_METRICS} == {k: theirs[k] for k in FINAL_METRICS}


# ----------------------------------------------------------------------------- kill and resume

@pytest.mark.timeout(240)
def test_sigkill_mid_run_then_rerun_trains_only_the_missing_runs(tmp_path, reference_grid, trained):
    results = tmp_path / "results"
    configs = grid.make_grid(results, FIXTURE)
    first, second, third = (c.run_dir for c in configs)
    proc = subprocess.Popen([sys.executable, "-u", str(GRID_SCRIPT), str(results), str(FIXTURE)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, in_training = [], threading.Event()

    def read_output():
        for line in proc.stdout:
            lines.append(line)
            if "seed 2:" in line:  # the run header, printed after data prep, right before the first step
                in_training.set()
    threading.Thread(target=read_output, daemon=True).start()
    try:
        assert in_training.wait(180), "the grid never reached run 2:\n" + "".join(lines)
        time.sleep(0.05)  # into the first steps; a fast machine could finish this tiny run in ~0.5 s
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()

    # What the morning shows: run 1 finished, run 2 started (config only), run 3 never started.
    assert set(os.listdir(first)) == set(os.listdir(reference_grid[0].run_dir))
    assert (second / "config.json").is_file() and not (second / "summary.json").exists()
    assert not third.exists()
    for path in results.rglob("summary.json"):  # whatever looks finished is complete
        assert read_json(path)["status"] == "finished"
    assert not list(results.rglob("*.tmp")), "half-written files left behind"
    assert list(load_results(results, include_failed=True)["seed"]) == [1]  # the killed run is no result
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    frame = run_grid(configs)  # the one command that finishes the rest

    assert trained == [second, third]
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == mtimes
    assert list(frame["status"]) == ["finished"] * 3
    for config, reference in zip(configs, reference_grid):
        assert_same_results(config, reference)


# ----------------------------------------------------------------------------- failure isolation

def _nan_logits(module, inputs, output):
    return output * float("nan")


def _out_of_memory(module, inputs, output):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the test)")


@pytest.fixture
def faults(monkeypatch):
    """seed -> forward hook on the classifier of that seed's model: injects NaN logits or an OOM."""
    by_seed, models = {}, []
    real_train, real_load = training._train, training.load_model_and_tokenizer

    def faulty_train(config, *rest):
        hook = by_seed.get(config.seed)
        if hook is None:
            return real_train(config, *rest)

        def load(*args, **kwargs):
            model, tokenizer = real_load(*args, **kwargs)
            model.classifier.register_forward_hook(hook)
            models.append(weakref.ref(model))
            return model, tokenizer
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(training, "load_model_and_tokenizer", load)
            return real_train(config, *rest)
    monkeypatch.setattr(training, "_train", faulty_train)
    by_seed["models"] = models
    return by_seed


@pytest.mark.timeout(120)
def test_failed_runs_are_recorded_the_grid_goes_on_and_reruns_skip_them(tmp_path, reference_grid, faults):
    results = tmp_path / "results"
    diverges = grid.make_config(results, FIXTURE, seed=7)
    out_of_memory = grid.make_config(results, FIXTURE, seed=8)
    bad_batch = grid.make_config(results, FIXTURE, seed=9, batch_size=15, per_device_batch_size=4)
    good = grid.make_config(results, FIXTURE, seed=1)
    # (a model not to be had is a settings error, raised before any folder: tests/test_grid_settings.py)
    configs = [diverges, out_of_memory, bad_batch, good]
    faults.update({7: _nan_logits, 8: _out_of_memory})

    gc.disable()  # memory of a failed run must be released by the grid itself, not by luck of the collector
    try:
        frame = run_grid(configs)
        leaked = [ref for ref in faults["models"] if ref() is not None]
    finally:
        gc.enable()
    assert not leaked, "a failed run's model is still alive after the grid moved on (GPU memory not freed)"

    expected = [(diverges, "TrainingDiverged: training loss is nan"), (out_of_memory, "OutOfMemoryError"),
                (bad_batch, "not a multiple")]
    assert list(frame["status"]) == ["failed"] * 3 + ["finished"]
    for config, reason in expected:
        record = read_json(config.run_dir / "failed.json")
        assert record["status"] == "failed" and reason in record["error"] and record["traceback"]
        assert not (config.run_dir / "summary.json").exists()
    assert "per_device_batch_size" in read_json(out_of_memory.run_dir / "failed.json")["error"]
    # Failures leave no state behind: the run after them equals the uninterrupted reference.
    assert_same_results(good, reference_grid[0])

    calls = []
    real = training._train
    training._train = lambda config, *rest: calls.append(config.run_dir) or real(config, *rest)
    try:
        again = run_grid(configs)  # a plain rerun: failed runs are reported, not retried
        assert calls == []
        assert list(again["status"]) == ["failed (skipped)"] * 3 + ["finished"]
        assert list(again["error"][:3]) == list(frame["error"][:3])

        faults.pop(7), faults.pop(8)  # the cause is fixed; now ask for a retry
        retried = run_grid(configs, retry_failed=True)
        assert calls == [c.run_dir for c in configs[:3]]
    finally:
        training._train = real
    assert list(retried["status"]) == ["finished", "finished", "failed"] + ["finished"]
    for config in (diverges, out_of_memory):
        files = set(os.listdir(config.run_dir))  # failed.json removed once it finished
        assert files >= RUN_FILES and "failed.json" not in files


# ----------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_logs_and_other_seeds_differ(tmp_path, reference_grid):
    again = grid.make_config(tmp_path, FIXTURE, seed=1)
    train_run(again)
    assert_same_results(again, reference_grid[0])
    logs = [(c.run_dir / "metrics.jsonl").read_text().splitlines() for c in reference_grid]
    train_losses = [[json.loads(r)["loss"] for r in log if '"split": "train"' in r] for log in logs]
    assert len({tuple(losses) for losses in train_losses}) == 3, "different seeds gave identical training"


# ----------------------------------------------------------------------------- bad input

def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DataError, match=r"unknown dataset 'restaurant'.*restaurant_sup.*acl_sup"):
        RunConfig("tiny-bert", "restaurant")
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        RunConfig("tiny-bert", ["acl_sup", "nope"])


def test_unknown_model_names_the_fix(tmp_path):
    config = grid.make_config(tmp_path, FIXTURE, model_name="no-such-org/no-such-model")
    with pytest.raises(ValueError, match=r"cannot load model .*local folder.*'tiny-bert'"):
        train_run(config)


@pytest.mark.parametrize("missing", ["data dir", "file"])
def test_missing_data_names_the_file_and_where_to_get_it(tmp_path, missing):
    data = tmp_path / "data"
    if missing == "file":
        (data / "restaurant").mkdir(parents=True)
        (data / "restaurant" / "train.json").write_text((FIXTURE / "restaurant" / "train.json").read_text())
    config = grid.make_config(tmp_path / "results", data)
    with pytest.raises(DataError) as err:
        train_run(config)
    message = str(err.value)
    assert str(data / "restaurant" / ("train.json" if missing == "data dir" else "test.json")) in message
    assert "howardhsu/ASC_failure" in message and "DATA_DIR" in message
    assert not (config.run_dir / "summary.json").exists()


@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("batch_size", -16), ("batch_size", 16.0), ("learning_rate", 0.0),
    ("learning_rate", -1e-5), ("learning_rate", 2.0), ("learning_rate", float("nan")),
    ("learning_rate", float("inf")), ("epochs", 0), ("warmup_ratio", 1.0), ("precision", "fp8"),
    ("max_steps", 0)])
def test_out_of_range_settings_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"bad RunConfig for tiny-bert / restaurant_sup: {field}"):
        RunConfig("tiny-bert", "restaurant_sup", **{field: value})


@pytest.mark.parametrize("how", ["below a file", "read-only folder"])
def test_unwritable_results_dir_is_a_clear_error_before_training(tmp_path, how, trained):
    if how == "below a file":
        (tmp_path / "file.txt").write_text("")
        results = tmp_path / "file.txt" / "results"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders; the 'below a file' case covers root")
        results = tmp_path / "locked"
        results.mkdir(mode=0o500)
    config = grid.make_config(results, FIXTURE)
    with pytest.raises(PermissionError, match=r"results dir .* is not writable.*results_dir="):
        train_run(config)
    # In a grid every run would fail the same way, and nowhere can record it: stop with the message.
    with pytest.raises(PermissionError, match="is not writable"):
        run_grid([config, grid.make_config(results, FIXTURE, seed=2)])
    assert trained == []


def test_configs_under_the_same_name_are_kept_apart_by_hash(tmp_path, trained):
    slow = grid.make_config(tmp_path, FIXTURE, learning_rate=1e-3, max_steps=2)
    fast = grid.make_config(tmp_path, FIXTURE, learning_rate=3e-3, max_steps=2)
    assert slow.run_dir.parent.parent == fast.run_dir.parent.parent  # same task/dataset/model folder
    assert slow.run_dir != fast.run_dir
    first, second = train_run(slow), train_run(fast)
    assert trained == [slow.run_dir, fast.run_dir]  # the second was trained, not taken from the first
    assert (first["config_hash"], second["config_hash"]) == (slow.config_hash(), fast.config_hash())
    assert read_json(fast.run_dir / "config.json")["learning_rate"] == 3e-3
    # The seed, paths, thread count and evaluation batch do not change the hash; the data's content does.
    same = grid.make_config(tmp_path / "elsewhere", str(FIXTURE) + "/", learning_rate=1e-3, max_steps=2,
                            seed=5, num_threads=2, eval_batch_size=64)
    assert same.config_hash() == slow.config_hash()
    changed = tmp_path / "data"
    for name in ("train.json", "test.json"):
        (changed / "restaurant").mkdir(parents=True, exist_ok=True)
        text = (FIXTURE / "restaurant" / name).read_text()
        (changed / "restaurant" / name).write_text(text.replace("great", "good", 1) if name == "test.json" else text)
    assert grid.make_config(tmp_path, changed, learning_rate=1e-3, max_steps=2).config_hash() != slow.config_hash()


# ----------------------------------------------------------------------------- where files go

ISOLATED_RUN = """
import sys
sys.path.insert(0, sys.argv[1])
from studykit.config import RunConfig
from studykit.training import train_run
train_run(RunConfig(sys.argv[2], "restaurant_sup", epochs=1, batch_size=16, learning_rate=1e-3, max_steps=2,
                    adapter_size=4, data_dir=sys.argv[3], results_dir=sys.argv[4], num_threads=1))
"""


@pytest.mark.timeout(180)
def test_a_run_writes_only_under_results_dir_with_safe_names_and_safetensors(tmp_path):
    """A fresh interpreter with its own cwd, HOME, TMPDIR and HF cache: after a run, only results/ changed."""
    model = build_tiny_model("bert", tmp_path / "models" / "my-org" / "tiny bert")  # an id with / and a space
    dirs = {name: tmp_path / name for name in ("cwd", "home", "tmp", "results")}
    for path in list(dirs.values())[:3]:
        path.mkdir()
    env = {**os.environ, "HOME": str(dirs["home"]), "TMPDIR": str(dirs["tmp"]), "HF_HOME": str(dirs["home"] / "hf"),
           "XDG_CACHE_HOME": str(dirs["home"] / "cache"), "PYTHONDONTWRITEBYTECODE": "1",
           "HF_HUB_OFFLINE": "1", "PROGRESS": "text"}
    env.pop("DATA_DIR", None)
    subprocess.run([sys.executable, "-c", ISOLATED_RUN, str(ROOT), str(model), str(FIXTURE), str(dirs["results"])],
                   cwd=dirs["cwd"], env=env, check=True, timeout=170, capture_output=True)
    for name in ("cwd", "home", "tmp"):
        assert [str(p) for p in dirs[name].rglob("*")] == [], f"files written outside results_dir, in {name}"

    summary = next(dirs["results"].rglob("summary.json"))
    relative = summary.parent.relative_to(dirs["results"]).parts
    assert relative[:2] == ("task2", "restaurant_sup") and len(relative) == 5  # task/dataset/model/hash/seed
    assert relative[2].endswith("my-org--tiny--bert")
    weight_files = {".bin", ".pt", ".pth", ".pkl", ".safetensors"}
    weights = [p.name for p in dirs["results"].rglob("*") if p.suffix in weight_files]
    assert weights == ["adapter.safetensors"]


@pytest.mark.parametrize("name, expected", [
    ("allenai/scibert_scivocab_uncased", "allenai--scibert_scivocab_uncased"), ("roberta-base", "roberta-base"),
    ("/home/me/models/bert base/", "home--me--models--bert--base"), ("../models/x", "..--models--x")])
def test_model_ids_become_one_safe_folder_name(name, expected):
    assert safe_name(name) == expected


@pytest.mark.parametrize("name", [".", "..", "./", "../", "a/../..", "~/models/m", "C:\\models\\m", "x" * 300])
def test_no_model_name_escapes_or_hides_its_folder(tmp_path, name):
    folder = safe_name(name)
    assert folder not in ("", ".", "..") and "/" not in folder and "\\" not in folder and len(folder) <= 80
    run_dir = grid.make_config(tmp_path, FIXTURE, model_name=name).run_dir
    assert run_dir.resolve().parent.parent.parent == (tmp_path / "task2" / "restaurant_sup").resolve()


# ----------------------------------------------------------------------------- no remote code

def test_no_remote_code_no_metric_scripts_and_safetensors_only(tmp_path):
    sources = [ROOT / "utils.py", *sorted((ROOT / "studykit").glob("*.py"))]
    for path in sources:
        text = path.read_text()
        assert "trust_remote_code" not in text, f"{path} mentions trust_remote_code"
        assert not re.search(r"\bevaluate\.load\b|^\s*(import|from) evaluate\b", text, re.M), path
        assert "torch.load(" not in text and "import pickle" not in text, f"{path} unpickles files"
        for call in re.findall(r"Model\w*\.from_pretrained\([^)]*\)", text):  # weights, not configs/tokenizers
            assert "use_safetensors=True" in call, f"{path}: {call}"
    # A checkpoint that has only pickle weights (pytorch_model.bin) is refused, never unpickled.
    model_dir = build_tiny_model("bert", tmp_path / "tiny")
    (model_dir / "model.safetensors").unlink()
    torch.save({}, model_dir / "pytorch_model.bin")
    with pytest.raises(Exception, match="safetensors|model.safetensors"):
        load_model_and_tokenizer(str(model_dir), 3, tmp_path / "cache")
