"""bench/: the FLOP formula, the data subsets, the engine names it replays, the matmul probes, and each mode of
bench/throughput.py end to end on --quick (tiny model, fixtures). Not timing tests: figures are not checked
against targets, only that they were measured and reported."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "throughput.py"
sys.path.insert(0, str(ROOT))

from bench import measure, report, sides, subsets  # noqa: E402
from studykit.hardware import cpu_supports_bf16  # noqa: E402


def run_quick(tmp_path, *args):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--work-dir", str(tmp_path / "work"),
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])


def test_flop_count_follows_the_formula(tmp_path):
    from studykit.modeling import load_model_and_tokenizer
    model, _ = load_model_and_tokenizer("tiny-bert", 3, tmp_path)
    encoder = sum(p.numel() for p in model.bert.encoder.parameters())
    head = sum(p.numel() for p in model.bert.pooler.parameters()) + sum(p.numel() for p in model.classifier.parameters())
    L, d = model.config.num_hidden_layers, model.config.hidden_size
    expected = 6 * encoder * (10 + 20) + 6 * head * 2 + 12 * L * d * (10 ** 2 + 20 ** 2)
    assert measure.count_train_flops(model, [10, 20]) == expected


def test_matmul_probes_per_precision():
    assert measure.matmul_peak("fp32", n=64, repeats=2) > 0
    assert measure.matmul_peak("bf16", n=64, repeats=2) > 0
    assert measure.matmul_sustained("fp32", n=64, seconds=0.05) > 0
    with pytest.raises(ValueError, match="fp32, bf16"):
        measure.matmul_peak("fp16", n=64)


def test_padding_fraction():
    assert measure.padding_fraction([2, 4, 4, 4], [0, 1, 2, 3], batch_size=2) == pytest.approx(2 / 16)
    assert measure.padding_fraction([2, 4, 4, 2], [1, 2, 0, 3], batch_size=2) == 0


def test_subset_gives_the_requested_training_examples(tmp_path, fixture_data):
    from studykit.data import get_dataset
    for name in ("restaurant_sup", "agnews_sup", "acl_sup"):
        data_dir = subsets.write_subset(Path(fixture_data), tmp_path / name, name, n_train=24, n_eval=8)
        ds = get_dataset(name, "[SEP]", data_dir)
        assert len(ds["train"]) == 24, name
        if name != "agnews_sup":  # agnews' test part is its 9:1 split of the same file
            assert len(ds["test"]) == 8
    with pytest.raises(ValueError, match="restaurant_sup"):
        subsets.write_subset(Path(fixture_data), tmp_path, "nope_sup", 1, 1)


def test_engine_names_the_bench_replays(tmp_path, fixture_data):
    """The engine's sampler seed and labels, which the bench imports to replay its sampler."""
    from studykit.data import get_dataset
    from studykit.config import RunConfig
    from studykit.pipeline import label_names, sampler_seed
    config = RunConfig("tiny-bert", "restaurant_sup", seed=3, data_dir=fixture_data, results_dir=str(tmp_path))
    assert sampler_seed(config, 2) == 3002
    assert sides.labels_of("restaurant_sup") == label_names(config)
    labels = label_names(config)
    assert len(labels) == len(set(get_dataset("restaurant_sup", "[SEP]", fixture_data)["train"]["label"]))


def test_results_file_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    first = report.default_out_path("x")
    report.write_results(first, "# header\n", "body\n")
    second = report.default_out_path("x")
    assert second != first and second.name.endswith("_x_2.txt")
    assert first.read_text() == "# header\nbody\n" and not list(tmp_path.glob("*.tmp"))


@pytest.mark.timeout(600)
def test_quick_throughput_reports_four_sides_and_two_mfus(tmp_path):
    out_file = tmp_path / "throughput.txt"
    stdout, out = run_quick(tmp_path, "--out", str(out_file))
    for key in ("ratio_vs_trainer", "ratio_vs_trainer_gbl", "ratio_vs_trainer_bf16_gbl", "mfu_seq128", "mfu_real",
                "matmul_peak_flops", "data_prep_first_s", "data_prep_second_s", "peak_memory_bytes", "settings"):
        assert key in out, key
    assert [k for k in out if k.startswith("mfu")] == ["mfu_real", "mfu_seq128"]  # two MFU figures, no more
    precision = out["precision_ours"]
    assert precision == ("bf16" if cpu_supports_bf16() else "fp32")
    peak = out["matmul_peak_flops"][precision]
    assert out["mfu_real"] == pytest.approx(
        report.geo_mean([row["ours"]["achieved_flops"] / peak for row in out["datasets"].values()]))
    if out["seq128_achieved_flops"] is None:  # a tiny model's steps below the timing noise (a loaded machine):
        assert "below the timing noise" in stdout and out["mfu_seq128"] is None  # said, not reported as a figure
    else:
        assert out["mfu_seq128"] == pytest.approx(out["seq128_achieved_flops"] / peak)
    assert out["seq128_full_length_fraction"] == 1.0  # the fixed-length runs really are all max_length
    row = out["datasets"]["restaurant_sup"]
    assert [row[s]["precision"] for s in sides.SIDES] == [precision, "fp32", "fp32", "bf16"]
    for side in sides.SIDES:
        assert row[side]["train_samples_per_s"] > 0 and row[side]["eval_samples_per_s"] > 0
        assert row[side]["train_tokens"] == row["ours"]["train_tokens"]  # one epoch: the same examples everywhere
    assert "MFU" in stdout and "target" in stdout and "Trainer bf16+gbl" in stdout
    text = out_file.read_text()  # the script's own record: header, the whole output, the same JSON line
    assert text.startswith("# python bench/throughput.py --quick") and "# commit " in text
    assert json.loads(text.strip().splitlines()[-1]) == out


@pytest.mark.timeout(600)
def test_quick_whole_run_times_both_processes(tmp_path):
    out_file = tmp_path / "whole_run.txt"
    stdout, out = run_quick(tmp_path, "--whole-run", "--out", str(out_file))
    assert out["other_side"] == "trainer_bf16_gbl" and out["sides"]["trainer_bf16_gbl"]["precision"] == "bf16"
    for side, (run,) in out["runs"].items():
        assert run["wall_s"] > run["in_run_wall_s"] > run["train_time_s"] > 0, side
        assert 0 <= run["f1_macro"] <= 1
    assert out["whole_run_ratio"] == pytest.approx(out["runs"]["trainer_bf16_gbl"][0]["wall_s"]
                                                   / out["runs"]["ours"][0]["wall_s"])
    assert ">= 1.20x" in stdout and "macro-F1 over seeds" in stdout
    assert out["f1_macro_diff"] == pytest.approx(out["runs"]["ours"][0]["f1_macro"]
                                                 - out["runs"]["trainer_bf16_gbl"][0]["f1_macro"])
    # bench/whole_run_mfu.py reads that file: one epoch's FLOPs over each side's training time, at each peak
    from bench import whole_run_mfu
    (mfu,) = whole_run_mfu.main([str(out_file), "--out", "-"])
    for side, row in mfu["sides"].items():
        assert row["train_s"] == out["runs"][side][0]["train_time_s"]
        assert row["mfu"] == pytest.approx(mfu["flops"] / row["train_s"] / mfu["peaks"][row["precision"]])
        assert 0 < row["mfu"] < 1, side
    assert mfu["ceiling"] == pytest.approx(mfu["sides"]["trainer_bf16_gbl"]["train_s"] / mfu["sides"]["ours"]["at_peak_s"])


@pytest.mark.timeout(600)
def test_quick_reference_cell_is_one_whole_run(tmp_path):
    stdout, out = run_quick(tmp_path, "--reference-cell", "--precision", "fp32")
    assert out["runs"] == 1 and out["datasets"] == ["restaurant_sup"]
    (run,) = out["per_run"]
    assert run["precision"] == "no" or run["precision"] == "fp32"  # the engine records Accelerate's name
    assert out["wall_s"] > run["wall_time_s"] > run["train_time_s"] > 0


@pytest.mark.timeout(600)
def test_quick_reference_grid_runs_both_tasks(tmp_path):
    stdout, out = run_quick(tmp_path, "--reference-grid")
    assert {r["task"] for r in out["per_run"]} == {"task2", "task3"}  # full fine-tuning and adapters
    assert any(r["adapter_size"] for r in out["per_run"]) and out["runs"] == len(out["per_run"]) >= 2
    assert out["wall_s"] > sum(r["wall_time_s"] for r in out["per_run"])
    from studykit.hardware import cpu_name, describe_machine
    header = next(line for line in stdout.splitlines() if line.startswith("reference grid:"))
    assert describe_machine() in header and header.count(cpu_name()) == 1  # the machine named once, with its kind


@pytest.mark.timeout(600)
def test_quick_profile_step_prints_the_top_ops(tmp_path):
    stdout, out = run_quick(tmp_path, "--profile-step")
    assert "aten::" in stdout and "Self CPU" in stdout
    assert set(out["phases_s"]) == {"forward", "backward", "clip + optimizer"}
    assert out["step_s"] > 0 and out["mfu_step"] > 0


def test_packing_layouts_and_quick_run(tmp_path):
    from bench import packing
    assert packing.layouts(2) == [(1, 2), (2, 1)] and packing.layouts(4) == [(1, 4), (2, 2), (4, 1)]
    assert packing.layouts(6) == [(1, 6), (2, 3)]
    out = packing.main(["--quick", "--precisions", "fp32", "--cores", "2", "--out", str(tmp_path / "p.txt")])
    assert {(r["workers"], r["threads"]) for r in out["runs"]} == {(1, 2), (2, 1)}
    assert all(r["recorded_precision"] == ["fp32"] and r["wall_s"] > 0 for r in out["runs"])
    assert out["summary"]["best_fp32"] in ("1x2", "2x1")
    assert (tmp_path / "p.txt").read_text().startswith("# python bench/packing.py --quick")


def test_parity_table_pairs_precisions_by_seed_and_flags_missing_cells():
    from bench.parity import parity_table
    rows = []
    for seed, (f32, b16) in enumerate([(0.60, 0.62), (0.70, 0.71), (0.65, 0.68)], 1):
        for precision, f1 in (("fp32", f32), ("bf16", b16)):
            rows.append({"dataset": "acl_sup", "training_method": "full", "arm": precision, "seed": seed,
                         "f1_macro": f1, "accuracy": f1 + 0.1, "train_time_s": 100.0 if precision == "fp32" else 40.0})
    rows.append({"dataset": "agnews_sup", "training_method": "full", "arm": "fp32", "seed": 1,
                 "f1_macro": 0.9, "accuracy": 0.9, "train_time_s": 1.0})
    table = parity_table(pd.DataFrame(rows)).set_index("dataset")
    assert table.loc["acl_sup", "pairs"] == 3
    assert table.loc["acl_sup", "f1_macro diff"] == pytest.approx(0.02)
    low, high = (float(x) for x in table.loc["acl_sup", "f1_macro 95% CI"].strip("[]").split(","))
    assert low < 0.02 < high and low > -0.03  # the t-interval of +0.02, +0.01, +0.03 over 3 seeds
    assert table.loc["acl_sup", "train s bf16"] == 40.0
    assert table.loc["agnews_sup", "pairs"] == 0  # bf16 has not run there: no difference is made up


def test_parity_compares_dropout_kernels_on_the_same_grid():
    from bench.parity import parity_table
    from studykit.profiles import study_configs
    torch_runs = study_configs("task2", "parity", data_dir="tests/fixtures/data", precision="bf16")
    int16_runs = study_configs("task2", "parity", data_dir="tests/fixtures/data", precision="bf16",
                               dropout_kernel="int16")
    assert all(c.dropout_kernel == "torch" for c in torch_runs)  # the profile pins its committed kernel
    assert {c.config_hash() for c in torch_runs}.isdisjoint(c.config_hash() for c in int16_runs)
    rows = [{"dataset": "acl_sup", "training_method": "full", "arm": kernel, "seed": seed, "f1_macro": f1,
             "accuracy": f1, "train_time_s": t}
            for seed in (1, 2) for kernel, f1, t in (("torch", 0.5 + seed / 100, 90.0), ("int16", 0.5, 60.0))]
    table = parity_table(pd.DataFrame(rows), "dropout").set_index("dataset")
    assert table.loc["acl_sup", "f1_macro diff"] == pytest.approx(-0.015)
    assert table.loc["acl_sup", "train s int16"] == 60.0 and table.loc["acl_sup", "train s torch"] == 90.0
