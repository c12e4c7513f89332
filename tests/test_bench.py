"""Smoke test of bench/throughput.py (tiny model, fixtures, --quick): it runs end to end and its last line is
the JSON summary with the documented keys. Not a timing test: the figures themselves are not checked."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "throughput.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flop_count_follows_the_formula(tmp_path):
    from studykit.modeling import load_model_and_tokenizer
    bench = load_bench()
    model, _ = load_model_and_tokenizer("tiny-bert", 3, tmp_path)
    encoder = sum(p.numel() for p in model.bert.encoder.parameters())
    head = sum(p.numel() for p in model.bert.pooler.parameters()) + sum(p.numel() for p in model.classifier.parameters())
    L, d = model.config.num_hidden_layers, model.config.hidden_size
    expected = 6 * encoder * (10 + 20) + 6 * head * 2 + 12 * L * d * (10 ** 2 + 20 ** 2)
    assert bench.count_train_flops(model, [10, 20]) == expected


def test_subset_gives_the_requested_training_examples(tmp_path, fixture_data):
    from studykit.data import get_dataset
    bench = load_bench()
    for name in ("restaurant_sup", "agnews_sup", "acl_sup"):
        data_dir = bench.write_subset(Path(fixture_data), tmp_path / name, name, n_train=24, n_eval=8)
        ds = get_dataset(name, "[SEP]", data_dir)
        assert len(ds["train"]) == 24, name
        if name != "agnews_sup":  # agnews' test part is its 9:1 split of the same file
            assert len(ds["test"]) == 8


@pytest.mark.timeout(600)
def test_quick_benchmark_prints_the_json_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--work-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("ratio_vs_trainer", "ratio_vs_trainer_gbl", "mfu", "mfu_seq128", "matmul_peak_flops",
                "data_prep_first_s", "data_prep_second_s", "peak_memory_bytes", "datasets", "settings"):
        assert key in out, key
    assert out["matmul_peak_flops"] > 0 and out["ratio_vs_trainer"] > 0
    row = out["datasets"]["restaurant_sup"]
    for side in ("ours", "trainer", "trainer_gbl"):
        assert row[side]["train_samples_per_s"] > 0 and row[side]["train_examples"] == row["ours"]["train_examples"]
        assert row[side]["train_tokens"] == row["ours"]["train_tokens"]  # one epoch: the same examples everywhere
        assert row[side]["padding_fraction"] is not None
    assert out["seq128_full_length_fraction"] == 1.0  # the fixed-length runs really are all max_length
    assert "mfu_seq128_dropout0" in out and row["ours"]["eval_samples_per_s"] > 0
    for key in ("seq128", "seq128_dropout0"):  # steady state, and the bare loop beside it
        assert out[f"mfu_{key}"] > 0 and out[f"bare_mfu_{key}"] > 0 and out[f"{key}_vs_bare_loop"] > 0
        # paired with the sustained matmul speed of the same minutes, which never beats the best burst
        assert out[f"mfu_{key}_paired"] > 0 and out[f"bare_mfu_{key}_paired"] > 0
        assert out["targets_met"][f"mfu_{key}_paired"] == (out[f"mfu_{key}_paired"] >= 0.70)
    assert 0 < out["matmul_sustained_flops_median"] <= out["matmul_peak_flops"] * 1.05
    assert "MFU" in done.stdout and "target" in done.stdout
