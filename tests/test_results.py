import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import utils


def _results():
    rows = []
    for seed, (a, b) in enumerate([(0.60, 0.65), (0.62, 0.66), (0.61, 0.67), (0.63, 0.66)], 1):
        rows += [{"dataset": "d", "method": "A", "seed": seed, "f1_macro": a, "accuracy": a, "f1_micro": a, "eval_loss": 1 - a},
                 {"dataset": "d", "method": "B", "seed": seed, "f1_macro": b, "accuracy": b, "f1_micro": b, "eval_loss": 1 - b}]
    return pd.DataFrame(rows)


def test_summarize_gives_mean_std_and_t_interval():
    summary = utils.summarize(_results())
    row = summary.loc[("d", "A"), "f1_macro"]
    values = np.array([0.60, 0.62, 0.61, 0.63])
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=1))
    assert row["n"] == 4
    assert row["ci95"] == pytest.approx(stats.t.ppf(0.975, 3) * values.std(ddof=1) / 2)
    table = utils.format_summary(summary)
    assert table.loc[("d", "A"), "f1_macro"] == "0.615 ± 0.013" and table.loc[("d", "A"), "seeds"] == 4
    half = stats.t.ppf(0.975, 3) * values.std(ddof=1) / 2
    assert table.loc[("d", "A"), "f1_macro 95 % CI"] == f"[{values.mean() - half:.3f}, {values.mean() + half:.3f}]"
    assert utils.format_summary(utils.summarize(_results()[lambda f: f.seed == 1]))["f1_macro 95 % CI"].iloc[0] == "n < 2"


def test_paired_comparison_detects_a_consistent_difference():
    result = utils.paired_comparison(_results(), "A", "B", "f1_macro")
    diffs = np.array([0.05, 0.04, 0.06, 0.03])
    assert result["n"] == 4 and result["mean_diff"] == pytest.approx(diffs.mean())
    assert result["p_value"] == pytest.approx(stats.ttest_rel([0.65, 0.66, 0.67, 0.66], [0.60, 0.62, 0.61, 0.63]).pvalue)
    assert result["ci95"][0] > 0 and result["verdict"] == "b higher beyond seed noise"


def test_paired_comparison_within_noise_and_unpaired_seeds():
    frame = _results()
    frame.loc[frame.method == "B", "f1_macro"] = [0.58, 0.66, 0.60, 0.64]  # differences straddle zero
    assert "within seed noise" in utils.paired_comparison(frame, "A", "B")["verdict"]
    one_seed = frame[frame.seed == 1]
    assert utils.paired_comparison(one_seed, "A", "B")["verdict"] == "too few paired seeds to decide"
    with pytest.raises(KeyError, match="methods not found"):
        utils.paired_comparison(frame, "A", "C")


def test_describe_ranking_names_the_best_method_and_the_verdict():
    lines = utils.describe_ranking(_results(), "f1_macro")
    assert lines[0].startswith("d: B has the best mean f1_macro (0.660) ahead of A (0.615)")
    assert "best higher beyond seed noise" in lines[0]
    loss = utils.describe_ranking(_results(), "eval_loss", higher_is_better=False)
    assert loss[0].startswith("d: B has the best mean eval_loss (0.340)")


def _claim_runs(adapter_f1, full_f1, losses=None):
    """acl runs of one model, full fine-tuning and adapters, and optional (model -> eval losses) on restaurant."""
    rows = []
    for seed, (a, f) in enumerate(zip(adapter_f1, full_f1), 1):
        rows += [{"dataset": "acl_sup", "model_name": "m", "method": "m adapter64 lr=0.001", "adapter_size": 64,
                  "seed": seed, "f1_macro": a},
                 {"dataset": "acl_sup", "model_name": "m", "method": "m full lr=5e-05", "adapter_size": None,
                  "seed": seed, "f1_macro": f}]
    for model, values in (losses or {}).items():
        rows += [{"dataset": "restaurant_sup", "model_name": model, "method": f"{model} full lr=1e-05",
                  "adapter_size": None, "seed": seed, "eval_loss": v} for seed, v in enumerate(values, 1)]
    return pd.DataFrame(rows)


def test_check_claims_gives_each_verdict_from_the_paired_interval():
    acl = [c for c in utils.REPORT_CLAIMS if c.get("dataset") == "acl_sup"]
    holds = utils.check_claims(_claim_runs([0.50, 0.52, 0.51], [0.40, 0.43, 0.41]), acl)
    assert holds["verdict"].tolist() == ["holds"] and "higher in 3 of 3 seeds" in holds["evidence"][0]
    opposite = utils.check_claims(_claim_runs([0.40, 0.43, 0.41], [0.50, 0.52, 0.51]), acl)
    assert opposite["verdict"][0].startswith("does not hold")
    noise = utils.check_claims(_claim_runs([0.50, 0.40, 0.46], [0.45, 0.47, 0.44]), acl)
    assert noise["verdict"][0] == "cannot decide (within seed noise)"


def test_check_claims_best_model_lower_loss_and_untestable_cases():
    best = [c for c in utils.REPORT_CLAIMS if c["kind"] == "best_model"]
    runs = _claim_runs([0.5] * 3, [0.4] * 3, {"roberta-base": [0.50, 0.52, 0.51], "bert-base-uncased": [0.60, 0.61, 0.63]})
    table = utils.check_claims(runs, best)
    restaurant = table[table.evidence.str.startswith("restaurant_sup")]
    assert restaurant["verdict"].tolist() == ["holds"]
    assert "advantage +0.103" in restaurant["evidence"].iloc[0]  # the loss it saves, as a positive number
    assert table[table.evidence.str.startswith("agnews_sup")]["verdict"].tolist() == ["not testable here"]
    worse = _claim_runs([0.5] * 3, [0.4] * 3, {"roberta-base": [0.60, 0.61, 0.63], "bert-base-uncased": [0.50, 0.52, 0.51]})
    assert utils.check_claims(worse, best)["verdict"].iloc[0].startswith("does not hold")
    only_minilm = _claim_runs([0.5] * 3, [0.4] * 3, {"all-minilm-l6-v2": [0.5, 0.5, 0.5]})
    assert set(utils.check_claims(only_minilm, best)["verdict"]) == {"not testable here"}
    with pytest.raises(ValueError, match="valid: \\['best_model', 'better'\\]"):
        utils.check_claims(runs, [dict(claim="x", kind="nonsense")])


def test_describe_runs_reads_hardware_and_cost_from_the_summaries():
    runs = pd.DataFrame({"hardware": ["1 x CPU X, 2 threads", "1 x CPU X, 2 threads", "1 x NVIDIA H100"],
                         "train_time_s": [1800.0, 1800.0, 3600.0]})
    text = utils.describe_runs(runs)
    assert text.startswith("3 runs, produced on: 1 x CPU X, 2 threads; 1 x NVIDIA H100;")
    assert "2.00 h in all, 40.0 min per run" in text
    assert utils.describe_runs(pd.DataFrame()) == "no finished runs"


def test_the_adapter_claim_compares_adapters_with_full_fine_tuning_only():
    acl = [c for c in utils.REPORT_CLAIMS if c.get("dataset") == "acl_sup"]
    runs = _claim_runs([0.50, 0.52, 0.51], [0.40, 0.43, 0.41]).assign(training_method=lambda f: [
        "adapter" if a == a and a else "full" for a in f["adapter_size"]])
    lora = runs[runs.training_method == "full"].assign(method="m lora8 lr=0.002", training_method="lora",
                                                     f1_macro=0.9)
    verdicts = utils.check_claims(pd.concat([runs, lora], ignore_index=True), acl)
    assert len(verdicts) == 1 and "lora" not in verdicts["evidence"][0]  # LoRA is not full fine-tuning
