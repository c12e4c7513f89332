import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import utils


def _results():
    rows = []
    for seed, (a, b) in enumerate([(0.60, 0.65), (0.62, 0.66), (0.61, 0.67), (0.63, 0.66)], 1):
        rows += [{"dataset": "d", "label": "A", "seed": seed, "f1_macro": a, "accuracy": a, "f1_micro": a, "eval_loss": 1 - a},
                 {"dataset": "d", "label": "B", "seed": seed, "f1_macro": b, "accuracy": b, "f1_micro": b, "eval_loss": 1 - b}]
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
    half = stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2
    assert result["ci95"] == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert result["verdict"] == utils.verdict(result["ci95"], 4) == "higher beyond seed noise (the 95 % interval excludes 0)"
    assert (result["b_wins"], result["b_losses"]) == (4, 0)


def test_paired_comparison_within_noise_and_unpaired_seeds():
    frame = _results()
    frame.loc[frame.label == "B", "f1_macro"] = [0.58, 0.66, 0.60, 0.64]  # differences straddle zero
    assert utils.paired_comparison(frame, "A", "B")["verdict"].startswith("not decided by these seeds")
    one_seed = frame[frame.seed == 1]
    assert utils.paired_comparison(one_seed, "A", "B")["verdict"] == "too few seeds to decide"
    with pytest.raises(KeyError, match="methods not found"):
        utils.paired_comparison(frame, "A", "C")


def test_one_verdict_wording_for_every_decision():
    assert utils.verdict((0.01, 0.03), 3).startswith("higher beyond seed noise")
    assert utils.verdict((-0.03, -0.01), 3).startswith("lower beyond seed noise")
    assert utils.verdict((-0.01, 0.03), 3).startswith("not decided by these seeds")
    assert utils.verdict((0.01, 0.03), 1) == utils.verdict((np.nan, np.nan), 5) == "too few seeds to decide"


def test_describe_ranking_names_the_best_method_and_the_verdict():
    lines = utils.describe_ranking(_results(), "f1_macro")
    assert lines[0].startswith("d: B has the best mean macro-F1 (0.660) ahead of A (0.615)")
    assert "higher in 4 of 4 seeds" in lines[0] and lines[0].endswith("higher beyond seed noise (the 95 % interval excludes 0).")
    loss = utils.describe_ranking(_results(), "eval_loss", higher_is_better=False)
    assert loss[0].startswith("d: B has the best mean loss (0.340)") and "lower beyond seed noise" in loss[0]


def _claim_runs(adapter_f1, full_f1, losses=None):
    """acl runs of one model, full fine-tuning and adapters, and optional (model -> eval losses) on restaurant."""
    rows = []
    for seed, (a, f) in enumerate(zip(adapter_f1, full_f1), 1):
        rows += [{"dataset": "acl_sup", "model_name": "m", "label": "m adapter64 lr=0.001", "adapter_size": 64,
                  "training_method": "adapter", "seed": seed, "f1_macro": a},
                 {"dataset": "acl_sup", "model_name": "m", "label": "m full lr=5e-05", "adapter_size": None,
                  "training_method": "full", "seed": seed, "f1_macro": f}]
    for model, values in (losses or {}).items():
        rows += [{"dataset": "restaurant_sup", "model_name": model, "label": f"{model} full lr=1e-05",
                  "adapter_size": None, "training_method": "full", "seed": seed, "eval_loss": v}
                 for seed, v in enumerate(values, 1)]
    return pd.DataFrame(rows)


def test_check_claims_gives_each_verdict_from_the_paired_interval():
    acl = [c for c in utils.REPORT_CLAIMS if c.get("dataset") == "acl_sup"]
    holds = utils.check_claims(_claim_runs([0.50, 0.52, 0.51], [0.40, 0.43, 0.41]), acl)
    assert holds["verdict"].tolist() == ["holds"] and "higher in 3 of 3 seeds (paired by seed)" in holds["evidence"][0]
    opposite = utils.check_claims(_claim_runs([0.40, 0.43, 0.41], [0.50, 0.52, 0.51]), acl)
    assert opposite["verdict"][0].startswith("does not hold")
    noise = utils.check_claims(_claim_runs([0.50, 0.40, 0.46], [0.45, 0.47, 0.44]), acl)
    assert noise["verdict"][0] == "cannot decide (within seed noise)"


def test_check_claims_best_model_compares_models_as_independent_samples():
    best = [c for c in utils.REPORT_CLAIMS if c["kind"] == "best_model" and c["model"] == "roberta-base"]
    roberta, bert = [0.50, 0.52, 0.51], [0.60, 0.61, 0.63]
    table = utils.check_claims(_claim_runs([0.5] * 3, [0.4] * 3, {"roberta-base": roberta, "bert-base-uncased": bert}), best)
    restaurant = table[table.evidence.str.startswith("restaurant_sup")]
    assert restaurant["verdict"].tolist() == ["holds"]
    welch = stats.ttest_ind(bert, roberta, equal_var=False).confidence_interval(0.95)  # scipy's own Welch interval
    assert "advantage +0.103" in restaurant["evidence"].iloc[0]  # the loss it saves, as a positive number
    assert f"Welch 95 % CI [{welch.low:+.3f}, {welch.high:+.3f}]" in restaurant["evidence"].iloc[0]
    assert "better in 100% of the 9 pairs of runs" in restaurant["evidence"].iloc[0]
    assert table[table.evidence.str.startswith("agnews_sup")]["verdict"].tolist() == ["not testable here"]
    # Not paired by seed: the same values with bert's seeds shuffled give the same evidence.
    shuffled = utils.check_claims(_claim_runs([0.5] * 3, [0.4] * 3, {"roberta-base": roberta,
                                                                    "bert-base-uncased": bert[::-1]}), best)
    assert shuffled["evidence"].tolist() == table["evidence"].tolist()
    worse = _claim_runs([0.5] * 3, [0.4] * 3, {"roberta-base": bert, "bert-base-uncased": roberta})
    assert utils.check_claims(worse, best)["verdict"].iloc[0].startswith("does not hold")
    only_minilm = _claim_runs([0.5] * 3, [0.4] * 3, {"all-minilm-l6-v2": [0.5, 0.5, 0.5]})
    assert set(utils.check_claims(only_minilm, best)["verdict"]) == {"not testable here"}
    with pytest.raises(ValueError, match="valid: \\['best_model', 'better', 'larger_model'\\]"):
        utils.check_claims(_claim_runs([0.5] * 3, [0.4] * 3), [dict(claim="x", kind="nonsense")])


def test_the_why_hypotheses_test_size_with_any_two_sizes_and_name_the_missing_domain_model():
    why = utils.WHY_HYPOTHESES
    small, big = [0.60, 0.62, 0.61, 0.63], [0.50, 0.52, 0.49]
    runs = _claim_runs([0.5] * 3, [0.4] * 3, {"small": small, "big": big})
    runs["total_params"] = runs["model_name"].map({"small": 22e6, "big": 110e6, "m": 50e6})
    table = utils.check_claims(runs, why)
    size = table[table.claim.str.contains("larger")]
    assert size["verdict"].tolist() == ["holds", "not testable here"]  # restaurant decided; no agnews runs
    welch = stats.ttest_ind([-v for v in big], [-v for v in small], equal_var=False).confidence_interval(0.95)
    assert size["evidence"].iloc[0] == (f"restaurant_sup: big (110 M parameters) 0.503 vs small (22 M) 0.615; advantage "
                                        f"of the larger +0.112, Welch 95 % CI [{welch.low:+.3f}, {welch.high:+.3f}] "
                                        "(independent samples)")
    flipped = runs.assign(total_params=runs["model_name"].map({"small": 110e6, "big": 22e6, "m": 50e6}))
    assert utils.check_claims(flipped, why)["verdict"].iloc[0].startswith("does not hold")  # size decides, not names
    science = table[table.claim.str.contains("SciBERT")]
    assert science["verdict"].tolist() == ["not testable here"]
    assert science["evidence"].iloc[0].endswith("(no encoder pre-trained on scientific text among these runs)")
    sentences = utils.describe_claims(table)
    assert len(sentences) == 2 and sentences[0].startswith(f"{why[0]['claim']}: holds (restaurant_sup: big")
    assert "; not testable here (agnews_sup: needs two models" in sentences[0]


def test_describe_runs_reads_hardware_and_cost_from_the_summaries():
    runs = pd.DataFrame({"hardware": ["1 x CPU X, 2 threads", "1 x CPU X, 2 threads", "1 x NVIDIA H100"],
                         "train_time_s": [1800.0, 1800.0, 3600.0]})
    text = utils.describe_runs(runs)
    assert text.startswith("3 runs, produced on: 1 x CPU X, 2 threads; 1 x NVIDIA H100;")
    assert "2.00 h in all, 40.0 min per run" in text
    assert utils.describe_runs(pd.DataFrame()) == "no finished runs"


def test_the_adapter_claim_compares_adapters_with_full_fine_tuning_only():
    acl = [c for c in utils.REPORT_CLAIMS if c.get("dataset") == "acl_sup"]
    runs = _claim_runs([0.50, 0.52, 0.51], [0.40, 0.43, 0.41])
    lora = runs[runs.training_method == "full"].assign(label="m lora8 lr=0.002", training_method="lora", f1_macro=0.9)
    verdicts = utils.check_claims(pd.concat([runs, lora], ignore_index=True), acl)
    assert len(verdicts) == 1 and "lora" not in verdicts["evidence"][0]  # LoRA is not full fine-tuning


def test_describe_ranking_across_models_uses_independent_samples_and_says_which_way_is_better():
    two = _results().assign(model_name=lambda f: f["label"].map({"A": "small", "B": "big"}))
    line = utils.describe_ranking(two, "eval_loss", higher_is_better=False)[0]
    assert "a random run of it has a lower loss than a random run of A in 100% of the 16 pairs of runs" in line
    assert "independent samples" in line and "lower beyond seed noise" in line
