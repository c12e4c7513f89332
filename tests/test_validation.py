"""Settings validated where they are made: every RunConfig field by type and range, a precision the machine
cannot run, a batch larger than the data, a results dir that is a file, and the environment overrides. Each
error names the field, the value and what would be valid (README "What happens when …": a setting is wrong)."""
import math
from pathlib import Path

import pytest
import torch

import utils
from studykit.config import NotRunnableHere, RunConfig
from studykit.grid import run_grid

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "data"
import grid  # noqa: E402  tests/scripts/grid.py, on sys.path through conftest.py


def tiny(results, seed=1, **overrides):
    return grid.make_config(results, FIXTURE, seed=seed, **{"max_steps": 2, **overrides})


@pytest.mark.parametrize("settings, message", [
    ({"max_grad_norm": -1}, r"max_grad_norm must be a number > 0 or None \(no clipping\), got -1"),
    ({"max_grad_norm": 0}, r"max_grad_norm must be a number > 0 or None \(no clipping\), got 0"),
    ({"max_grad_norm": math.nan}, r"max_grad_norm must be a number > 0 or None .*got nan"),
    ({"weight_decay": -5}, r"weight_decay must be a number >= 0 \(0: none\), got -5"),
    ({"weight_decay": math.nan}, r"weight_decay must be a number >= 0 .*got nan"),
    ({"max_steps": 1.5}, r"max_steps must be None or an int >= 1, got 1.5"),
    ({"learning_rate": "1e-5"}, r"learning_rate must be a number in \(0, 1\), .*got '1e-5'"),
    ({"learning_rate": None}, r"learning_rate must be a number in \(0, 1\), .*got None"),
    ({"learning_rate": math.inf}, r"learning_rate must be a number in \(0, 1\), .*got inf"),
    ({"seed": 2 ** 40}, r"seed must be >= 0 .* and < 2\*\*32 .*got 1099511627776"),
    ({"epochs": 2.0}, r"epochs must be an int >= 1, got 2.0"),
    ({"warmup_ratio": "0.1"}, r"warmup_ratio must be a number in \[0, 1\), got '0.1'"),
    ({"dropout": 1.5}, r"dropout must be None \(the model's own\) or a number in \[0, 1\), got 1.5"),
    ({"num_threads": 0}, r"num_threads must be None \(torch's default\) or an int >= 1, got 0"),
    ({"group_by_length": "yes"}, r"group_by_length must be True or False, got 'yes'"),
    ({"evals_per_epoch": 0.5}, r"evals_per_epoch must be an int >= 1, got 0.5"),
    ({"eval_batch_size": 1.5}, r"eval_batch_size must be None or an int >= 1, got 1.5"),
    ({"results_dir": ""}, r"results_dir must be a folder, got ''"),
    ({"lora_rank": 0}, r"lora_rank and lora_alpha must be ints >= 1, got 0 and 16"),
])
def test_every_field_is_checked_by_type_and_range_and_the_error_says_what_is_valid(settings, message):
    with pytest.raises(ValueError, match=r"bad RunConfig for tiny-bert / acl_sup: " + message):
        RunConfig("tiny-bert", "acl_sup", **settings)


def test_a_model_name_must_be_given():
    with pytest.raises(ValueError, match="model_name must be a hub id, a local folder or an alias, got ''"):
        RunConfig("", "acl_sup")


def test_no_clipping_is_spelled_none_and_trains(tmp_path):
    frame = run_grid([tiny(tmp_path, max_grad_norm=None)])
    assert frame["status"][0] == "finished"


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on a GPU")
def test_fp16_on_a_cpu_is_refused_at_the_runs_start_before_any_file_is_written(tmp_path):
    config = tiny(tmp_path, precision="fp16")  # made anywhere (it may be meant for a GPU machine)
    with pytest.raises(NotRunnableHere, match=r"precision='fp16' cannot run on this machine \(no GPU.*use "
                                              r"precision='auto', 'bf16' \(autocast on CPU\) or 'fp32'"):
        utils.train_run(config)
    assert not config.run_dir.exists()
    with pytest.raises(utils.SettingsError, match="precision: precision='fp16' cannot run"):
        run_grid([config])  # in a grid: a settings error, before anything is written
    assert not config.run_dir.exists()
    assert utils.failure_record(NotRunnableHere("fp16"))["kind"] == "environment"  # from a worker: retried


def test_a_batch_larger_than_the_training_data_is_named(tmp_path):
    frame = run_grid([tiny(tmp_path, batch_size=1000)])
    assert frame["status"][0] == "failed"
    assert ("batch_size 1000 is larger than the 96 training examples of restaurant_sup; choose batch_size <= 96"
            in frame["error"][0])


@pytest.mark.parametrize("where", ["results", "results/deeper"])
def test_a_results_dir_that_is_a_file_is_a_clear_error(tmp_path, where):
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(PermissionError, match=rf"results dir .*{where} is not writable \(.*results is a file, not "
                                              r"a folder\); choose another with results_dir=\.\.\. or RESULTS_DIR"):
        run_grid([tiny(tmp_path / where)])


@pytest.mark.parametrize("name, raw, kind, message", [
    ("SEEDS", "1,,2", list, r"SEEDS='1,,2' is not a valid list: item 2 of 3 is empty"),
    ("SEEDS", "1,2,", list, r"item 3 of 3 is empty"),
    ("SEEDS", " ", list, r"SEEDS=' ' is not a valid list: it is blank; unset it for the default"),
    ("EPOCHS", "", int, r"EPOCHS='' is not a valid int: it is blank"),
    ("EPOCHS", "1.5", int, r"EPOCHS='1.5' is not a valid int"),
    ("VERBOSE", "maybe", bool, r"VERBOSE='maybe' is not a valid bool: expected one of"),
])
def test_environment_overrides_are_parsed_strictly(monkeypatch, name, raw, kind, message):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=message):
        utils.from_env(name, None, kind)


def test_environment_overrides_that_parse(monkeypatch):
    for name, raw in {"SEEDS": " 1, 2 ,3", "FLAG": "No", "LR": "None", "DATA_DIR": "/data"}.items():
        monkeypatch.setenv(name, raw)
    assert utils.from_env("SEEDS", None, list) == [1, 2, 3]
    assert utils.from_env("FLAG", True) is False
    assert utils.from_env("LR", 1e-5) is None
    assert utils.from_env("DATA_DIR", None) == "/data"
