"""The run-folder protocol: one definition of where a run lives, when it is done or failed, how it is read."""
import json
import shutil

from studykit.config import RunConfig
from studykit.results import load_results
from studykit.runs import RunFolder, grid_row, run_folders


def _config(tmp_path, fixture_data, **kw):
    return RunConfig("tiny-bert", "restaurant_sup", data_dir=fixture_data, results_dir=str(tmp_path), **kw)


def test_folder_is_fixed_once_and_written_in_protocol_order(tmp_path, fixture_data):
    config = _config(tmp_path, fixture_data, seed=3)
    folder = RunFolder.for_config(config)
    assert folder.path == config.run_dir and folder.path.name == "seed3"
    assert folder.path.parent.name == folder.config_hash == config.config_hash()
    assert not folder.is_done and folder.failed is None
    folder.write_config(config)
    folder.write_failed({"status": "failed", "error": "E", "traceback": ""})
    assert folder.failed["error"] == "E"
    row, to_run = grid_row(config, folder)
    assert not to_run and row["status"] == "failed (skipped)"
    assert grid_row(config, folder, retry_failed=True)[1]
    folder.write_finished([{"step": 1, "split": "train", "loss": 1.0}], [0, 1], {"status": "finished"})
    assert folder.is_done and folder.failed is None and not folder.failed_path.exists()
    assert folder.summary()["config_hash"] == folder.config_hash
    assert folder.predictions() == [0, 1] and folder.config()["seed"] == 3
    assert not [p for p in folder.path.iterdir() if p.name.endswith(".tmp")]
    row, to_run = grid_row(config, folder)
    assert not to_run and row["status"] == "finished" and row["training_method"] == "full"


def test_only_seed_int_folders_are_runs(tmp_path, fixture_data):
    config = _config(tmp_path, fixture_data, seed=1)
    folder = RunFolder.for_config(config)
    folder.write_config(config)
    folder.write_finished([{"step": 1, "split": "test", "accuracy": 1.0}], [0], {"status": "finished", "f1_macro": 1.0})
    for copy in ("seed1.bak", "seedx", "seed1-old"):
        shutil.copytree(folder.path, folder.path.with_name(copy))
    assert [f.path.name for f in run_folders(tmp_path)] == ["seed1"]
    results = load_results(tmp_path)
    assert len(results) == 1 and results["training_method"].tolist() == ["full"]
    assert json.loads((folder.path / "summary.json").read_text())["f1_macro"] == 1.0
