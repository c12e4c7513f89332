"""Statistics over seeds: summaries, the one paired comparison (methods of one model, paired by seed), the one
independent-samples comparison (two models), and the one verdict every sentence and table words its decision in.

Why two comparisons. Methods of one model share, seed by seed, the data order and the classification head's
initialisation, so seed k of full fine-tuning and seed k of adapters are a pair: the paired difference removes
what the seed does to both. Two models share only the data order: seed k of model A and seed k of model B start
from different pretrained weights and different head initialisations, so pairing them removes nothing and
pretends a dependence that is not there. Across models the two sets of seeds are independent samples: Welch's
t-interval of the difference of means (no equal-variance assumption; the larger model may vary more), and, in
place of "seeds won", the probability that a random run of one model beats a random run of the other (the
common-language effect size, Mann-Whitney U / (n_a x n_b), over every one of the n_a x n_b pairs of runs).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .results import METRICS, one_config_per_group

__all__ = ["summarize", "format_summary", "format_interval", "decide", "verdict", "VERDICTS", "paired_comparison",
           "independent_comparison", "min_wilcoxon_p", "what_seeds_decide", "compare_methods", "compare_models",
           "compare_sizes", "compare_models_per_class"]


# --- the verdict ------------------------------------------------------------------------------------------------

# The decision on a difference b - a from its 95 % interval, and its wording, used by every table and sentence.
VERDICTS = {"higher": "higher beyond seed noise (the 95 % interval excludes 0)",
            "lower": "lower beyond seed noise (the 95 % interval excludes 0)",
            "undecided": "not decided by these seeds (the 95 % interval includes 0)",
            "too few": "too few seeds to decide"}


def decide(ci, n: int) -> str:
    """"higher", "lower", "undecided" or "too few": what the 95 % interval `ci` of a difference decides
    (`n`: the seeds behind it, the smaller side for two samples; below 2 nothing is decided)."""
    low, high = ci
    if n < 2 or not (np.isfinite(low) and np.isfinite(high)):
        return "too few"
    return "higher" if low > 0 else "lower" if high < 0 else "undecided"


def verdict(ci, n: int) -> str:
    """The decision of `decide` in words (`VERDICTS`): the one wording of the study's verdicts."""
    return VERDICTS[decide(ci, n)]


def format_interval(ci) -> str:
    """An interval as "[low, high]" with signs, or "n/a" where it is undefined (one seed)."""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if np.all(np.isfinite(ci)) else "n/a"


# --- summaries over seeds ---------------------------------------------------------------------------------------

def summarize(results: pd.DataFrame, metrics=METRICS, by=("dataset", "label"),
              on_duplicate: str = "warn") -> pd.DataFrame:
    """Mean, std (ddof=1), n and the 95 % t-interval half-width over seeds, per group. Each group must be one
    configuration, and each seed counts once (`one_config_per_group`: an error, or a warning on duplicates)."""
    def describe(values: pd.Series) -> pd.Series:
        values = values.dropna()
        n = len(values)
        std = values.std(ddof=1) if n > 1 else np.nan
        half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n) if n > 1 else np.nan
        return pd.Series({"mean": values.mean(), "std": std, "n": n, "ci95": half})

    results = one_config_per_group(results, by, on_duplicate, what="summarize")
    parts = {m: results.groupby(list(by))[m].apply(describe).unstack() for m in metrics}
    return pd.concat(parts, axis=1)


def format_summary(summary: pd.DataFrame, digits: int = 3, ci_for=("accuracy", "f1_macro")) -> pd.DataFrame:
    """`mean ± std` strings per metric, and the 95 % t-interval of the mean for the metrics in `ci_for`, for
    reading (the numbers stay in `summarize`'s output)."""
    out = pd.DataFrame(index=summary.index)
    for metric in summary.columns.get_level_values(0).unique():
        part = summary[metric]
        out[metric] = [f"{m:.{digits}f} ± {s:.{digits}f}" if np.isfinite(s) else f"{m:.{digits}f}"
                       for m, s in zip(part["mean"], part["std"])]
        if metric in ci_for:
            out[f"{metric} 95 % CI"] = [f"[{m - h:.{digits}f}, {m + h:.{digits}f}]" if np.isfinite(h) else "n < 2"
                                        for m, h in zip(part["mean"], part["ci95"])]
    out["seeds"] = summary[summary.columns[0][0]]["n"].astype(int).values
    return out


# --- paired by seed: methods of one model -------------------------------------------------------------------------

def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test can give over n pairs: 2 / 2^n
    (every pair in one direction). With 5 pairs it is 0.0625, so it can never reach 0.05."""
    return min(1.0, 2.0 / 2 ** n)


def _paired_values(results, a, b, metric, dataset, on_duplicate, by):
    frame = results if dataset is None else results[results["dataset"] == dataset]
    if a not in set(frame[by]) or b not in set(frame[by]):
        raise KeyError(f"methods not found; have {sorted(frame[by].unique())}")
    frame = one_config_per_group(frame[frame[by].isin([a, b])], (by,), on_duplicate, "paired_comparison")
    return frame.pivot(index="seed", columns=by, values=metric)[[a, b]].dropna()


def paired_comparison(results: pd.DataFrame, a: str, b: str, metric: str = "f1_macro", dataset: str | None = None,
                      on_duplicate: str = "warn", by: str = "label") -> dict:
    """b - a paired by seed (two methods of one model; `a`, `b` values of the `by` column): the mean
    difference, its 95 % t-interval and paired t-test p-value, seeds b won and lost, scipy's exact Wilcoxon
    signed-rank p-value and its floor for this many pairs, a 95 % percentile bootstrap interval (coarse with
    few seeds), and the `verdict`. Only seeds both finished count; each side must be one configuration
    (pass `dataset` where the table holds several) and each seed counts once (`one_config_per_group`)."""
    pairs = _paired_values(results, a, b, metric, dataset, on_duplicate, by)
    diff = (pairs[b] - pairs[a]).to_numpy()
    n = len(diff)
    out = {"n": n, "mean_diff": float(diff.mean()) if n else np.nan, "ci95": (np.nan, np.nan), "p_value": np.nan,
           "b_wins": int((diff > 0).sum()), "b_losses": int((diff < 0).sum()), "wilcoxon_p": np.nan,
           "wilcoxon_min_p": min_wilcoxon_p(n), "bootstrap_ci95": (np.nan, np.nan)}
    if n >= 2:
        std = diff.std(ddof=1)
        half = stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)
        out["ci95"] = (out["mean_diff"] - half, out["mean_diff"] + half)
        out["p_value"] = float(stats.ttest_rel(pairs[b], pairs[a]).pvalue) if std > 0 else 0.0
        if np.any(diff != 0):
            out["wilcoxon_p"] = float(stats.wilcoxon(diff, method="exact").pvalue)
        if np.ptp(diff) > 0:
            boot = stats.bootstrap((diff,), np.mean, confidence_level=0.95, method="percentile",
                                   n_resamples=2000, random_state=0)
            out["bootstrap_ci95"] = (float(boot.confidence_interval.low), float(boot.confidence_interval.high))
    out["ci95"] = tuple(float(v) for v in out["ci95"])
    out["verdict"] = verdict(out["ci95"], n)
    return out


# --- two independent samples: two models ----------------------------------------------------------------------

def independent_comparison(a, b) -> dict:
    """b - a for two independent samples (runs of two models; see the module's docstring for why they are not
    paired): the means and n of each side, the difference of means with Welch's 95 % t-interval (Welch-
    Satterthwaite degrees of freedom) and p-value (`scipy.stats.ttest_ind(equal_var=False)`), and
    `prob_b_beats_a`: the share of the n_a x n_b pairs (a run of a, a run of b) in which b's run is higher,
    ties counting half (Mann-Whitney U / (n_a n_b), `scipy.stats.mannwhitneyu`), with its exact two-sided
    p-value; and the `verdict` (n: the smaller side)."""
    a, b = (np.asarray(pd.Series(x).dropna(), dtype=float) for x in (a, b))
    n_a, n_b = len(a), len(b)
    out = {"n_a": n_a, "n_b": n_b, "mean_a": float(a.mean()) if n_a else np.nan,
           "mean_b": float(b.mean()) if n_b else np.nan, "ci95": (np.nan, np.nan), "df": np.nan, "p_value": np.nan,
           "prob_b_beats_a": np.nan, "pairs": n_a * n_b, "mann_whitney_p": np.nan}
    out["mean_diff"] = out["mean_b"] - out["mean_a"]
    if n_a >= 1 and n_b >= 1:
        u = stats.mannwhitneyu(b, a, alternative="two-sided", method="exact" if n_a * n_b < 400 else "auto")
        out["prob_b_beats_a"] = float(u.statistic) / (n_a * n_b)
        out["mann_whitney_p"] = float(u.pvalue)
    if n_a >= 2 and n_b >= 2:
        va, vb = a.var(ddof=1) / n_a, b.var(ddof=1) / n_b
        se = np.sqrt(va + vb)
        if se > 0:
            df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
            half = stats.t.ppf(0.975, df) * se
            out.update(ci95=(out["mean_diff"] - half, out["mean_diff"] + half), df=float(df),
                       p_value=float(stats.ttest_ind(b, a, equal_var=False).pvalue))
        else:
            out.update(ci95=(out["mean_diff"], out["mean_diff"]), df=float(n_a + n_b - 2))
    out["ci95"] = tuple(float(v) for v in out["ci95"])
    out["verdict"] = verdict(out["ci95"], min(n_a, n_b))
    return out


def what_seeds_decide(n: int, paired: bool = True) -> str:
    """What n seeds per cell can and cannot decide, in words: paired by seed (methods of one model, which share
    the seed's data order and head initialisation), or, with `paired=False`, two independent samples (two
    models: seed k of one shares only the data order with seed k of the other, so they are not a pair)."""
    if n < 2:
        return f"With {n} seed per cell nothing can be decided about seed noise."
    if not paired:
        df = 2 * n - 2
        return (f"With {n} seeds per model, two models are two independent samples (seed k of one model and seed k "
                f"of another share the data order only, not the initialisation): the difference of their means has "
                f"a 95 % interval of about ±{stats.t.ppf(0.975, df):.2f} standard errors (Welch's t, about {df} "
                f"degrees of freedom at equal spreads); seeds won is not defined across models, and what replaces it "
                f"is the probability that a random run of one model beats a random run of the other, over all "
                f"{n * n} pairs of runs. An interval that includes 0 means 'not decided', not 'equal'.")
    t = stats.t.ppf(0.975, n - 1)
    return (f"With {n} paired seeds the 95 % t-interval is ±{t:.2f} standard errors wide (t with {n - 1} "
            f"degree{'s' if n > 2 else ''} of freedom), so only a difference large against its seed-to-seed spread excludes 0; an "
            f"exact Wilcoxon test over {n} pairs cannot go below p = {min_wilcoxon_p(n):.4g} even when one method "
            f"wins every seed, so it {'cannot' if min_wilcoxon_p(n) > 0.05 else 'can'} reach 0.05. "
            f"Seeds won is the plainest evidence at this size; an interval that includes 0 means 'not decided', "
            f"not 'equal'." + (f" A bootstrap over {n} differences only resamples those {n} numbers: its interval "
                               f"is narrower than the t-interval and under-covers; read it as descriptive."
                               if n < 10 else ""))


# --- tables of comparisons ------------------------------------------------------------------------------------

def compare_methods(results: pd.DataFrame, metric: str = "f1_macro") -> pd.DataFrame:
    """Each method against full fine-tuning of the same model on the same dataset (paired by seed), one row
    per (dataset, model, label): the means, the difference with its 95 % t- and bootstrap intervals (low, high),
    seeds won and lost, and the Wilcoxon p-value. Methods are told apart by the runs' `training_method`."""
    results = one_config_per_group(results, what="compare_methods")
    rows = []
    for (dataset, model), part in results.groupby(["dataset", "model_name"]):
        full = sorted(part.loc[part["training_method"] == "full", "label"].unique())
        others = part.loc[part["training_method"] != "full"].drop_duplicates("label").sort_values("label")
        for base in full:
            for other, method in zip(others["label"], others["training_method"]):
                s = paired_comparison(part, base, other, metric)
                rows.append({"dataset": dataset, "label": other, "baseline": base, "model_name": model,
                             "training_method": method,
                             f"{metric} method": part.loc[part.label == other, metric].mean(),
                             f"{metric} baseline": part.loc[part.label == base, metric].mean(),
                             "difference": s["mean_diff"], "t low": s["ci95"][0], "t high": s["ci95"][1],
                             "bootstrap low": s["bootstrap_ci95"][0], "bootstrap high": s["bootstrap_ci95"][1],
                             "paired seeds": s["n"], "seeds won": s["b_wins"], "seeds lost": s["b_losses"],
                             "Wilcoxon p": s["wilcoxon_p"], "lowest possible p": s["wilcoxon_min_p"]})
    return pd.DataFrame(rows)


def _model_order(part: pd.DataFrame) -> list[str]:
    """Models from the smallest to the largest (parameters recorded in the summaries; else by name)."""
    size = part.groupby("model_name")["total_params"].max() if "total_params" in part \
        else pd.Series(0, index=part["model_name"].unique())
    return sorted(size.index, key=lambda m: (size[m], m))


def compare_models(results: pd.DataFrame, metric: str = "f1_macro") -> pd.DataFrame:
    """Full fine-tuning of each pair of models on each dataset, as two independent samples
    (`independent_comparison`): one row per (dataset, smaller model a, larger model b) with n and mean per
    side, the difference b - a with Welch's 95 % interval and p-value, P(a run of b beats a run of a) over the
    n_a x n_b pairs, and the verdict. Each model must have one full fine-tuning configuration per dataset."""
    full = results[results["training_method"] == "full"] if len(results) else results
    full = one_config_per_group(full, what="compare_models")  # each label one configuration, then each model
    full = one_config_per_group(full, ("dataset", "model_name"), what="compare_models")
    rows = []
    for dataset, part in full.groupby("dataset") if len(full) else []:
        models = _model_order(part)
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                s = independent_comparison(part.loc[part.model_name == a, metric],
                                           part.loc[part.model_name == b, metric])
                rows.append({"dataset": dataset, "model a": a, "model b": b, "n a": s["n_a"], "n b": s["n_b"],
                             f"{metric} a": s["mean_a"], f"{metric} b": s["mean_b"], "difference": s["mean_diff"],
                             "Welch low": s["ci95"][0], "Welch high": s["ci95"][1], "Welch df": s["df"],
                             "Welch p": s["p_value"], "P(b beats a)": s["prob_b_beats_a"], "pairs": s["pairs"],
                             "verdict": s["verdict"]})
    return pd.DataFrame(rows)


def _main_labels(part: pd.DataFrame) -> dict:
    """{training method: the label of its main configuration}: the one with the most seeds (a one-seed check
    beside it, such as the reference profile's LoRA learning-rate check, is not the method's result)."""
    seeds = part.groupby(["training_method", "label"])["seed"].nunique().reset_index()
    seeds = seeds.sort_values(["seed", "label"], ascending=[False, True]).drop_duplicates("training_method")
    return dict(zip(seeds["training_method"], seeds["label"]))


def compare_sizes(results: pd.DataFrame, metric: str = "f1_macro") -> pd.DataFrame:
    """Does a method's gap to full fine-tuning change with the model? Per (dataset, training method other than
    full) and pair of models (smaller a, larger b): the gap at each model (mean of the per-seed differences
    method - full, paired by seed within the model) and the change of the gap b - a with Welch's 95 %
    interval: the per-seed gaps of two models are two independent samples. Only models with both the method
    and full fine-tuning on the dataset appear; each method by its main configuration (`_main_labels`)."""
    results = one_config_per_group(results, what="compare_sizes")
    gaps = []
    for (dataset, model), part in results.groupby(["dataset", "model_name"]) if len(results) else []:
        main = _main_labels(part)
        if "full" not in main:
            continue
        for method, label in main.items():
            if method == "full":
                continue
            wide = part.pivot(index="seed", columns="label", values=metric)
            gap = (wide[label] - wide[main["full"]]).dropna()
            gaps += [{"dataset": dataset, "model_name": model, "training_method": method, "seed": s, "gap": g,
                      "total_params": part["total_params"].max() if "total_params" in part else 0}
                     for s, g in gap.items()]
    gaps = pd.DataFrame(gaps)
    rows = []
    for (dataset, method), part in gaps.groupby(["dataset", "training_method"]) if len(gaps) else []:
        models = _model_order(part)
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                s = independent_comparison(part.loc[part.model_name == a, "gap"], part.loc[part.model_name == b, "gap"])
                rows.append({"dataset": dataset, "training_method": method, "model a": a, "model b": b,
                             "gap a": s["mean_a"], "gap b": s["mean_b"], "n a": s["n_a"], "n b": s["n_b"],
                             "change": s["mean_diff"], "Welch low": s["ci95"][0], "Welch high": s["ci95"][1],
                             "verdict": s["verdict"]})
    return pd.DataFrame(rows)


def compare_models_per_class(scores: pd.DataFrame) -> pd.DataFrame:
    """`compare_models` per class: each class's test F1 (from `per_class_scores`, full fine-tuning runs) of
    two models as independent samples, one row per (dataset, class, model pair), in the dataset's class order."""
    if scores.empty:
        return pd.DataFrame()
    rows = []
    for (dataset, name), part in scores.groupby(["dataset", "class"], sort=False):
        table = compare_models(part, "f1")
        rows.append(table.assign(**{"class": name, "test support": part["support"].iloc[0]}))
    out = pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows) else pd.DataFrame()
    if out.empty:
        return out
    out = out.astype({"n a": int, "n b": int, "pairs": int})
    return out[["dataset", "class", *[c for c in out if c not in ("dataset", "class")]]]
