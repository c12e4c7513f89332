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
