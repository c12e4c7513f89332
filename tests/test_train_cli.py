"""train.py: its options are derived from RunConfig's fields, and they override the profile."""
import dataclasses
import subprocess
import sys

import train
from studykit.config import RunConfig
from conftest import ROOT


def test_help_documents_every_run_option():
    text = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    for f in dataclasses.fields(RunConfig):
        if f.name not in train._CHOSEN_BY_PROFILE:
            assert f"--{f.name}" in text, f.name
            assert f.metadata["help"].split()[0] in text


def test_options_override_the_profile(monkeypatch):
    seen = []
    monkeypatch.setattr(train, "run_grid", lambda configs, retry_failed: seen.append((configs, retry_failed)) or
                        __import__("pandas").DataFrame(columns=["dataset", "model_name", "seed", "status",
                                                                "accuracy", "f1_macro"]))
    train.main(["task3", "--profile", "fast", "--models", "tiny-bert", "--seeds", "3", "--epochs", "1",
                "--group_by_length", "false", "--retry_failed"])
    (configs, retry), = seen
    assert retry and {(c.model_name, c.seed, c.epochs, c.group_by_length, c.adapter_size) for c in configs} == {
        ("tiny-bert", 3, 1, False, 16)}
    assert {c.learning_rate for c in configs} == {3e-3, 1e-2}


def test_a_grid_where_every_run_fails_reports_the_reason_and_exits_1(tmp_path, capsys):
    code = train.main(["task2", "--profile", "fast", "--models", "tiny-bert", "--batch_size", "15",
                       "--per_device_batch_size", "4", "--datasets", "restaurant_sup", "--seeds", "1",
                       "--results_dir", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 of 1 runs failed" in out and "0 of 1 runs finished" in out and "KeyError" not in out
    assert "not a multiple of per-device batch" in out


def test_a_model_not_to_be_had_stops_before_anything_is_written_and_exits_2(tmp_path, capsys):
    code = train.main(["task2", "--profile", "fast", "--models", str(tmp_path / "no-such-model"),
                       "--datasets", "restaurant_sup", "--seeds", "1", "--results_dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model': no folder with config.json" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_fetch_is_a_subcommand(capsys):
    try:
        train.main(["fetch", "--help"])
    except SystemExit as done:
        assert done.code == 0
    assert "Fetch once, run offline" in capsys.readouterr().out


def test_plan_prints_what_fits_and_trains_nothing(tmp_path, capsys):
    code = train.main(["task2", "--profile", "fast", "--models", "tiny-bert", "--datasets", "restaurant_sup",
                       "--seeds", "1", "--results_dir", str(tmp_path / "results"), "--plan"])
    out = capsys.readouterr().out
    assert code == 0 and "full fine-tuning" in out and "batch fits 8 GiB" in out
    assert not (tmp_path / "results" / "task2").exists()


def test_a_grid_on_a_small_gpu_is_warned_before_it_starts():
    # run_grid prints these on a GPU before the first run; here with a pretend 1 MB card.
    from studykit.grid import memory_warnings
    from studykit.profiles import study_configs
    configs = study_configs("task2", "fast", models=["tiny-bert"], datasets=["restaurant_sup"], seeds=[1])
    warnings = memory_warnings(configs, device_memory_bytes=10**6)
    assert len(warnings) == 1 and "tiny-bert" in warnings[0] and "restaurant_sup" in warnings[0]
    assert memory_warnings(configs, device_memory_bytes=10**12) == []
