"""Results and plots: read run folders into pandas, summarize over seeds, compare methods, draw curves."""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from .config import RunConfig
from .data import get_dataset, test_overlap_mask
from .hardware import hardware_label
from .progress import format_duration
from .runs import dataset_label, run_folders

__all__ = ["load_results", "load_metrics", "summarize", "format_summary", "paired_comparison",
           "run_label", "method_columns", "describe_ranking", "overlap_effect", "METRICS", "REPORT_CLAIMS", "describe_runs",
           "check_claims", "one_config_per_group", "DuplicateSeedWarning"]

# Micro-F1 is left out of the tables: for single-label classification it equals accuracy (it stays in the
# run summaries and metrics logs).
METRICS = ("accuracy", "f1_macro", "eval_loss")


def run_label(config: dict) -> str:
    """A short name for a run's method: the model, plus adapter size and learning rate for adapter runs."""
    name = Path(config["model_name"]).name if "/" in config["model_name"] and Path(config["model_name"]).exists() \
        else config["model_name"]
    kind = method_columns(config)
    if kind["training_method"] == "adapter":
        return f"{name} adapter{config['adapter_size']} lr={config['learning_rate']:g}"
    if kind["training_method"] == "lora":
        return f"{name} lora{config['lora_rank']} lr={config['learning_rate']:g}"
    return f"{name} full lr={config['learning_rate']:g}"


def method_columns(config: dict) -> dict:
    """A run's method as structured columns (read from its config, never from a label): `training_method`
    (full, adapter or lora), `adapter_size` and `lora_rank` (None where they do not apply)."""
    method = config.get("method") or ("adapter" if config.get("adapter_size") else "full")
    return {"training_method": method, "adapter_size": config.get("adapter_size"),
            "lora_rank": config.get("lora_rank", 8) if method == "lora" else None}


def load_results(results_dir="results", task: str | None = None, include_failed: bool = False) -> pd.DataFrame:
    """One row per finished run (config columns + summary columns); optionally failed runs too.

    `method` is the run's display label (model, method, learning rate); `training_method`, `adapter_size`
    and `lora_rank` say what the method is, for filtering without matching labels."""
    rows = []
    for folder in run_folders(results_dir, task):
        if folder.is_done:
            outcome = folder.summary()
        elif include_failed and folder.failed is not None:
            outcome = folder.failed
        else:
            continue  # started but never finished (e.g. killed): not a result
        config = folder.config()
        outcome.pop("versions", None), outcome.pop("data_source", None)  # nested: in summary.json
        rows.append({**config, **outcome, **method_columns(config), "method": run_label(config),
                     "dataset": dataset_label(config["dataset"]), "run_dir": str(folder.path)})
    return pd.DataFrame(rows)


def describe_runs(results: pd.DataFrame) -> str:
    """Where the runs on display were produced and what they cost, read from their summaries (the machine
    executing the notebook may not be the one that trained: finished runs are reused)."""
    if results.empty:
        return "no finished runs"
    return (f"{len(results)} runs, produced on: {'; '.join(sorted({hardware_label(h) for h in results['hardware']}))}; "
            f"training time (evaluation excluded) {format_duration(results['train_time_s'].sum())} in all, "
            f"{format_duration(results['train_time_s'].mean())} per run on average")


def load_metrics(results_dir="results", task: str | None = None) -> pd.DataFrame:
    """The metrics logs of all finished runs, long format, with the run's method, dataset, seed and folder
    (select the curves of a table's runs with `metrics[metrics.run_dir.isin(results.run_dir)]`)."""
    frames = []
    for folder in run_folders(results_dir, task):
        if not folder.is_done:
            continue
        config = folder.config()
        log = pd.read_json(folder.metrics_path, lines=True)
        frames.append(log.assign(method=run_label(config), **method_columns(config),
                                 dataset=dataset_label(config["dataset"]), seed=config["seed"], task=config["task"],
                                 model_name=config["model_name"], config_hash=folder.config_hash,
                                 run_dir=str(folder.path)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- aggregating runs: one configuration per group, one run per seed ------------------------------------------

class DuplicateSeedWarning(UserWarning):
    """Two finished runs claim the same configuration and seed."""


# The settings that tell configurations apart where a table has no config_hash column (a hand-made table).
_SETTINGS = [f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("hash") != "never"]


def _config_keys(results: pd.DataFrame) -> pd.Series:
    """Each row's configuration: its config hash, else the settings the table has, else the row's label."""
    if "config_hash" in results:
        return results["config_hash"].astype(str)
    columns = [c for c in _SETTINGS if c in results] or [c for c in ("dataset", "method") if c in results]
    return results[columns].apply(lambda row: json.dumps(list(row), default=str), axis=1) if columns \
        else pd.Series("", index=results.index)


def _differing_settings(runs: pd.DataFrame) -> str:
    """The settings whose values differ between `runs`, as "name: a, b" (or the data, if no setting does)."""
    parts = []
    for column in _SETTINGS:
        if column in runs:
            values = sorted({json.dumps(v, default=str) for v in runs[column]})
            if len(values) > 1:
                parts.append(f"{column}: {', '.join(values)}")
    return "; ".join(parts) or "the data files' content (data_source)"


def one_config_per_group(results: pd.DataFrame, by=("dataset", "method"), on_duplicate: str = "warn",
                         what: str = "this table") -> pd.DataFrame:
    """`results` ready to aggregate over seeds within each `by` group: every group must hold one configuration
    (one config hash; a table without that column: one set of settings), else a ValueError names the group,
    the settings that differ and the fix. A configuration and seed found in more than one run is an error
    (`on_duplicate="error"`) or a warning naming the folders, keeping the first folder in path order, exactly
    as `studykit.analysis.select_runs` does. Every public function that aggregates runs calls this first."""
    if results.empty:
        return results
    by = [c for c in by if c in results]
    keys = _config_keys(results)
    if by:
        pooled = keys.groupby([results[c].astype(str) for c in by]).nunique()
        pooled = pooled[pooled > 1]
        if not pooled.empty:
            group = pooled.index[0] if isinstance(pooled.index[0], tuple) else (pooled.index[0],)
            mask = np.logical_and.reduce([results[c].astype(str) == v for c, v in zip(by, group)])
            raise ValueError(
                f"{what}: the group {dict(zip(by, group))} holds runs of {pooled.iloc[0]} configurations "
                f"(config hashes {', '.join(sorted(keys[mask].unique()))}; settings that differ: "
                f"{_differing_settings(results[mask])}), which would be averaged as one; select one configuration "
                "with select_runs(results, configs), or add the setting that differs to the grouping (by=...)")
    if "seed" not in results:
        return results
    # Positions, not index labels: a table concatenated without ignore_index repeats its labels.
    runs = pd.DataFrame({"key": keys.to_numpy(), "seed": results["seed"].to_numpy(),
                         "where": results["run_dir"].astype(str).to_numpy() if "run_dir" in results
                         else [f"row {i}" for i in range(len(results))]})
    runs = runs.sort_values("where", kind="stable")
    repeated = runs.duplicated(["key", "seed"], keep=False)
    if not repeated.any():
        return results
    message = "; ".join(f"config {k} seed {s} in {len(w)} runs: {', '.join(w)}" for (k, s), w in
                        runs[repeated].groupby(["key", "seed"])["where"].apply(list).items())
    if on_duplicate == "error":
        raise ValueError(f"{what}: duplicate runs (never averaged): {message}; delete or move the copies")
    warnings.warn(f"{what}: duplicate runs, keeping the first folder of each: {message}", DuplicateSeedWarning,
                  stacklevel=3)
    first = runs.index[~runs.duplicated(["key", "seed"], keep="first")]
    return results.iloc[sorted(first)]


def summarize(results: pd.DataFrame, metrics=METRICS, by=("dataset", "method"),
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


def paired_comparison(results: pd.DataFrame, method_a: str, method_b: str, metric: str = "f1_macro",
                      dataset: str | None = None, on_duplicate: str = "warn") -> dict:
    """Effect of b over a (b - a) paired by seed: mean difference, its 95 % t-interval and the paired
    t-test p-value. Only seeds both methods finished are used. Each method must be one configuration (pass
    `dataset` where the table holds several) and each seed counts once (`one_config_per_group`)."""
    wide = _paired_table(results, method_a, method_b, metric, dataset, on_duplicate, "paired_comparison")[1]
    pairs = wide[[method_a, method_b]].dropna()
    diff = pairs[method_b] - pairs[method_a]
    n = len(diff)
    if n < 2:
        return {"n": n, "mean_diff": float(diff.mean()) if n else np.nan, "ci95": (np.nan, np.nan),
                "p_value": np.nan, "verdict": "too few paired seeds to decide"}
    half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    mean = float(diff.mean())
    p = float(stats.ttest_rel(pairs[method_b], pairs[method_a]).pvalue) if diff.std(ddof=1) > 0 else 0.0
    low, high = mean - half, mean + half
    verdict = ("b higher beyond seed noise" if low > 0 else "b lower beyond seed noise" if high < 0
               else "within seed noise (interval includes 0)")
    return {"n": n, "mean_diff": mean, "ci95": (float(low), float(high)), "p_value": p, "verdict": verdict,
            "b_wins": int((diff > 0).sum())}


def _paired_table(results, method_a, method_b, metric, dataset, on_duplicate, what) -> tuple:
    """The runs of methods a and b after `one_config_per_group`, and their `metric` with one row per seed and
    one column per method."""
    frame = results if dataset is None else results[results["dataset"] == dataset]
    if method_a not in set(frame["method"]) or method_b not in set(frame["method"]):
        raise KeyError(f"methods not found; have {sorted(frame['method'].unique())}")
    frame = one_config_per_group(frame[frame["method"].isin([method_a, method_b])], ("method",), on_duplicate, what)
    return frame, frame.pivot(index="seed", columns="method", values=metric)


def describe_ranking(results: pd.DataFrame, metric: str = "f1_macro", higher_is_better: bool = True) -> list[str]:
    """Per dataset: the best method by mean `metric`, and whether its lead over the runner-up is beyond
    seed noise (paired by seed). Sentences computed from the results, for the notebook's findings."""
    results = one_config_per_group(results, what="describe_ranking")
    lines = []
    for dataset, part in results.groupby("dataset"):
        means = part.groupby("method")[metric].mean().sort_values(ascending=not higher_is_better)
        if len(means) == 1:
            lines.append(f"{dataset}: only {means.index[0]} ran ({metric} {means.iloc[0]:.3f}).")
            continue
        best, second = means.index[0], means.index[1]
        cmp = paired_comparison(part, second, best, metric)
        low, high = cmp["ci95"]
        lines.append(f"{dataset}: {best} has the best mean {metric} ({means.iloc[0]:.3f}) ahead of {second} "
                     f"({means.iloc[1]:.3f}); paired difference {cmp['mean_diff']:+.3f}, 95 % CI "
                     f"[{low:+.3f}, {high:+.3f}] over {cmp['n']} seeds: {cmp['verdict'].replace('b ', 'best ')}.")
    return lines


def overlap_effect(results: pd.DataFrame, dataset: str, data_dir=None) -> pd.DataFrame:
    """Per method, macro-F1 and accuracy on the whole test split and on the test examples whose text does
    not occur in the training split (read from each run's predictions.json), mean over seeds."""
    runs = one_config_per_group(results[results["dataset"] == dataset], what="overlap_effect")
    test = get_dataset(dataset, "[SEP]", data_dir)["test"]
    labels, classes = np.array(test["label"]), list(range(test.features["label"].num_classes))
    unseen = ~np.array(test_overlap_mask(dataset, "[SEP]", data_dir))
    rows = []
    for _, run in runs.iterrows():
        path = Path(run["run_dir"]) / "predictions.json"
        if not path.is_file():
            continue
        pred = np.array(json.loads(path.read_text()))
        rows.append({"method": run["method"], "seed": run["seed"],
                     # over every class of the dataset, so both columns average over the same classes
                     "f1_macro_all": f1_score(labels, pred, average="macro", labels=classes, zero_division=0),
                     "f1_macro_unseen": f1_score(labels[unseen], pred[unseen], average="macro", labels=classes,
                                                 zero_division=0),
                     "accuracy_all": accuracy_score(labels, pred),
                     "accuracy_unseen": accuracy_score(labels[unseen], pred[unseen])})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby("method").mean(numeric_only=True).drop(columns="seed")
    return table.assign(test_examples=len(labels), unseen_examples=int(unseen.sum()))


# --- the seed report's claims, checked against our runs ------------------------------------------------------

# Each claim as the report states it, and how to test it on a results table: `better` (one method beats
# another on a dataset, paired by seed) or `best_model` (a model has the best mean metric among the models
# fully fine-tuned on each dataset, and its lead over the runner-up is beyond seed noise).
REPORT_CLAIMS = [
    dict(claim="Adapters beat full fine-tuning on acl", kind="better", dataset="acl_sup", metric="f1_macro",
         winner="adapter", loser="full"),
    dict(claim="roberta-base has the lowest eval loss on restaurant and agnews", kind="best_model",
         datasets=["restaurant_sup", "agnews_sup"], metric="eval_loss", model="roberta-base",
         higher_is_better=False),
]


def _verdict(n: int, low: float, high: float, opposite: str) -> str:
    """The verdict on a claimed advantage from the 95 % interval [low, high] of that advantage over n seeds."""
    if n < 2:
        return "cannot decide (too few paired seeds)"
    if low > 0:
        return "holds"
    if high < 0:
        return f"does not hold ({opposite}, beyond seed noise)"
    return "cannot decide (within seed noise)"


def _is_adapter(runs: pd.DataFrame) -> pd.Series:
    """Adapter runs, from the run's config columns (never its label)."""
    if "training_method" in runs:
        return runs["training_method"] == "adapter"
    return runs["adapter_size"].notna()


def _is_full(runs: pd.DataFrame) -> pd.Series:
    if "training_method" in runs:
        return runs["training_method"] == "full"
    return runs["adapter_size"].isna()


def _check_better(results, claim):
    part = results[results["dataset"] == claim["dataset"]]
    if part.empty:
        return [("not testable here", f"no runs on {claim['dataset']}")]
    rows = []
    for model, runs in part.groupby("model_name"):
        full = sorted(runs.loc[_is_full(runs), "method"].unique())  # LoRA is neither side of this claim
        adapters = sorted(runs.loc[_is_adapter(runs), "method"].unique())
        if not full or not adapters:
            continue
        winners, losers = (adapters, full) if claim["winner"] == "adapter" else (full, adapters)
        for loser in losers:
            for winner in winners:
                cmp = paired_comparison(runs, loser, winner, claim["metric"])
                low, high = cmp["ci95"]
                evidence = (f"{winner} - {loser}: {claim['metric']} {cmp['mean_diff']:+.3f}, 95 % CI "
                            f"[{low:+.3f}, {high:+.3f}], higher in {cmp.get('b_wins', 0)} of {cmp['n']} seeds")
                rows.append((_verdict(cmp["n"], low, high, "the opposite"), evidence))
    return rows or [("not testable here", f"no model has both adapter and full fine-tuning runs on {claim['dataset']}")]


def _check_best_model(results, claim):
    rows = []
    sign = 1 if claim.get("higher_is_better", True) else -1
    for dataset in claim["datasets"]:
        part = results[(results["dataset"] == dataset) & _is_full(results)]
        models = sorted(part["model_name"].unique())
        if claim["model"] not in models or len(models) < 2:
            rows.append(("not testable here", f"{dataset}: needs {claim['model']} and at least one other model "
                                               f"fully fine-tuned; these runs have {models or 'none'}"))
            continue
        means = part.groupby("method")[claim["metric"]].mean().sort_values(ascending=sign < 0)
        best = means.index[0]
        claimed = next(m for m in means.index if part.loc[part.method == m, "model_name"].iloc[0] == claim["model"])
        rival = means.index[1] if best == claimed else best
        cmp = paired_comparison(part, rival, claimed, claim["metric"])
        low, high = (sign * np.array(cmp["ci95"]))[::sign]
        evidence = (f"{dataset}: {claimed} {means[claimed]:.3f} vs {rival} {means[rival]:.3f}; advantage "
                    f"{sign * cmp['mean_diff']:+.3f}, 95 % CI [{low:+.3f}, {high:+.3f}] over {cmp['n']} seeds")
        rows.append((_verdict(cmp["n"], low, high, "another model is better"), evidence))
    return rows


def check_claims(results: pd.DataFrame, claims=None) -> pd.DataFrame:
    """One row per (claim, comparison): the verdict from our runs and the evidence behind it.

    Verdicts: "holds" (the claimed direction, beyond seed noise), "does not hold" (the opposite, beyond seed
    noise), "cannot decide" (the paired 95 % interval includes 0, or too few seeds) and "not testable here"
    (the runs lack what the claim is about, e.g. roberta-base in a MiniLM-only profile).
    """
    results = one_config_per_group(results, what="check_claims")
    checks = {"better": _check_better, "best_model": _check_best_model}
    rows = []
    for claim in claims or REPORT_CLAIMS:
        if claim["kind"] not in checks:
            raise ValueError(f"unknown claim kind {claim['kind']!r}; valid: {sorted(checks)}")
        verdicts = checks[claim["kind"]](results, claim)
        if len(verdicts) > 1 and {v for v, _ in verdicts} == {"not testable here"}:  # one row says it once
            verdicts = [("not testable here", "; ".join(e for _, e in verdicts))]
        for verdict, evidence in verdicts:
            rows.append({"claim": claim["claim"], "verdict": verdict, "evidence": evidence})
    return pd.DataFrame(rows, columns=["claim", "verdict", "evidence"])
