"""Precision that fits the device: "auto" resolved per machine, hashed resolved, recorded with its reason;
runs of different precisions in one process; the one-off migration of runs hashed with the word "auto"."""
import json
import shutil

import pytest
import torch

import utils
from studykit import hardware
from studykit.config import RunConfig, hash_of_config
from studykit.runs import RunFolder, write_json_atomic
from tools.migrate_precision_hash import migrate


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend this CPU has native bf16 (True) or not (False)."""
    def pretend(has: bool):
        monkeypatch.setattr(hardware, "_cpu_bf16_features", lambda: ("AVX-512 BF16",) if has else ())
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return pretend


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_picks_bf16_only_on_a_cpu_with_native_bf16(cpu_bf16, has_bf16, expected):
    cpu_bf16(has_bf16)
    precision, reason = hardware.resolve_precision("auto")
    assert precision == expected and reason.startswith("auto: CPU")
    assert ("supports AVX-512 BF16" in reason) == has_bf16
    assert hardware.resolve_precision("fp32") == ("fp32", "set explicitly")  # forcing fp32 always works
    assert hardware.cpu_supports_bf16() == has_bf16


def test_auto_hashes_as_the_precision_it_resolves_to(cpu_bf16, fixture_data):
    def config(precision):
        return RunConfig("tiny-bert", "restaurant_sup", data_dir=fixture_data, precision=precision)
    cpu_bf16(True)
    auto_bf16 = config("auto").config_hash()
    assert auto_bf16 == config("bf16").config_hash() and config("auto").resolved_precision == "bf16"
    cpu_bf16(False)
    auto_fp32 = config("auto").config_hash()
    assert auto_fp32 == config("fp32").config_hash() != auto_bf16  # an fp32 and a bf16 run never share a folder


def _fake_run(root, fixture_data, seed, recorded, precision="auto", finished=True):
    """A run folder as the engine wrote it before precision was hashed resolved (the old "auto" hash)."""
    config = RunConfig("tiny-bert", "restaurant_sup", seed=seed, data_dir=fixture_data, results_dir=str(root),
                       precision=precision)
    old = hash_of_config(config, precision)
    path = RunFolder.for_config(config).path.parent.parent / old / f"seed{seed}"
    folder = RunFolder(path, old)
    folder.write_config(config)
    if finished:
        folder.write_finished([{"step": 1, "split": "test", "f1_macro": 0.5}], [0, 1],
                              {"precision": recorded, "f1_macro": 0.5, "steps": 1})
    return config, path


def test_migration_moves_auto_runs_to_their_resolved_hash_and_changes_nothing_else(tmp_path, fixture_data):
    root = tmp_path / "results"
    _, fp32_old = _fake_run(root, fixture_data, 1, "no")      # an "auto" run that ran in fp32
    bf16_cfg, bf16_old = _fake_run(root, fixture_data, 2, "bf16")    # one that ran in bf16
    _, explicit = _fake_run(root, fixture_data, 3, "no", precision="fp32")
    _, unfinished = _fake_run(root, fixture_data, 4, None, finished=False)
    before = {p: p.read_bytes() for p in fp32_old.iterdir()}

    report = migrate(root)
    # where the reference profile, with precision pinned to fp32, looks for it
    fp32_new = RunConfig("tiny-bert", "restaurant_sup", seed=1, data_dir=fixture_data, results_dir=str(root),
                         precision="fp32").run_dir
    assert sorted(str(new) for _, new in report["moved"]) == sorted([str(fp32_new), str(
        fp32_new.parent.parent / hash_of_config(bf16_cfg, "bf16") / "seed2")])
    assert not fp32_old.exists() and not bf16_old.exists() and explicit.exists() and unfinished.exists()
    assert [p for p, _ in report["skipped"]] == [unfinished]
    for old_path, data in before.items():
        new = (fp32_new / old_path.name).read_bytes()
        if old_path.name == "summary.json":
            old_summary, new_summary = json.loads(data), json.loads(new)
            assert new_summary.pop("config_hash") == fp32_new.parent.name != old_summary.pop("config_hash")
            assert new_summary == old_summary
        else:
            assert new == data, old_path.name  # config.json keeps "precision": "auto", as it was run
    assert migrate(root)["moved"] == []  # a second pass has nothing to do


def test_migration_leaves_runs_whose_folder_is_not_their_old_hash(tmp_path, fixture_data):
    root = tmp_path / "results"
    _, path = _fake_run(root, fixture_data, 1, "no")
    copy = path.parent.parent / "0123456789" / "seed1"  # a hand-made copy under another name
    shutil.copytree(path, copy)
    report = migrate(root)
    assert copy.exists() and [p for p, _ in report["skipped"]] == [copy] and len(report["moved"]) == 1


def test_runs_of_different_precisions_in_one_process(tmp_path, fixture_data):
    # Accelerate's state is one per process: without a reset the second run raised "AcceleratorState has
    # already been initialized and cannot be changed".
    base = dict(model_name="tiny-bert", dataset="restaurant_sup", batch_size=16, learning_rate=3e-3, epochs=1,
                max_steps=2, evals_per_epoch=1, data_dir=fixture_data, results_dir=str(tmp_path), num_threads=1)
    configs = [RunConfig(**base, precision=p) for p in ("fp32", "bf16", "fp32")]
    configs[2].seed = 2
    grid = utils.run_grid(configs, stop_on_error=True)
    assert list(grid["status"]) == ["finished"] * 3
    assert list(grid["precision"]) == ["fp32", "bf16", "fp32"]
    assert list(grid["precision_reason"]) == ["set explicitly"] * 3
    single = utils.train_run(RunConfig(**base, seed=3, precision="auto"))
    assert (single["precision"], single["precision_reason"]) == hardware.resolve_precision("auto")
