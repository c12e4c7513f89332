"""What the runs show: runs selected by config, per-class scores, paired statistics, learning-curve facts,
computed from the results (studykit.findings turns them into the notebooks' sentences)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import confusion_matrix, f1_score

from .data import get_dataset
from .results import DuplicateSeedWarning, _paired_table, one_config_per_group, paired_comparison

__all__ = ["select_runs", "duplicate_seeds", "DuplicateSeedWarning", "test_labels", "per_class_scores",
           "per_class_table", "confusion_matrices", "never_predicted", "class_balance", "majority_level",
           "paired_statistics", "min_wilcoxon_p", "what_seeds_decide", "curve_facts", "describe_curve_facts",
           "describe_collapse", "compare_methods", "describe_comparisons", "METRIC_NAMES", "metric_name",
           "selection_table", "describe_selection"]

METRIC_NAMES = {"f1_macro": "macro-F1", "accuracy": "accuracy", "eval_loss": "loss", "loss": "training loss",
                "f1_micro": "micro-F1"}


def metric_name(metric: str) -> str:
    """A metric's name in words, for titles and sentences."""
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


# --- which runs -----------------------------------------------------------------------------------------------

def duplicate_seeds(results: pd.DataFrame) -> pd.DataFrame:
    """The rows that share a (config hash, seed) with another row: never two seeds to average."""
    if results.empty:
        return results
    return results[results.duplicated(["config_hash", "seed"], keep=False)].sort_values(["config_hash", "seed"])


def select_runs(results: pd.DataFrame, configs, on_duplicate: str = "warn") -> pd.DataFrame:
    """The finished runs of exactly these configs (matched by config hash: every setting and the data's
    content), never by label. A config and seed found in more than one folder is an error
    (`on_duplicate="error"`) or a warning naming the folders, keeping the first folder in path order.
    `attrs["missing"]` lists the configs not finished yet."""
    wanted = {(c.config_hash(), c.seed): c for c in configs}
    if results.empty:
        chosen = results
    else:
        keys = list(zip(results["config_hash"], results["seed"]))
        chosen = results[[k in wanted for k in keys]].sort_values("run_dir")
    dupes = duplicate_seeds(chosen)
    if not dupes.empty:
        groups = dupes.groupby(["config_hash", "seed"])["run_dir"].apply(list)
        message = "; ".join(f"config {h} seed {s} in {len(d)} folders: {', '.join(d)}" for (h, s), d in groups.items())
        if on_duplicate == "error":
            raise ValueError(f"duplicate runs (never averaged): {message}; delete or move the copies")
        warnings.warn(f"duplicate runs, keeping the first folder of each: {message}", DuplicateSeedWarning,
                      stacklevel=2)
        chosen = chosen.drop_duplicates(["config_hash", "seed"], keep="first")
    found = set(zip(chosen["config_hash"], chosen["seed"])) if not chosen.empty else set()
    chosen = chosen.reset_index(drop=True)
    chosen.attrs["missing"] = [str(c.run_dir) for k, c in wanted.items() if k not in found]
    return chosen


# --- selection on the dev split ---------------------------------------------------------------------------------

def selection_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method), for runs selected on dev (`early_stopping_patience`): the epoch budget, the
    epochs trained before dev macro-F1 stopped improving, the epoch selected, how many runs stopped early,
    the dev macro-F1 selected, and the training time that took (mean over seeds). Empty without such runs."""
    if "selected_epoch" not in results or results["selected_epoch"].isna().all():
        return pd.DataFrame()
    runs = one_config_per_group(results.dropna(subset=["selected_epoch"]), what="selection_table")
    # From the epochs trained, not the summary's flag: runs of the first dev-selected grid set that flag when
    # the patience ran out at the very last evaluation too.
    runs = runs.assign(stopped_before_budget=runs["epochs_trained"] < runs["epochs"] - 1e-9)
    table = runs.groupby(["dataset", "method"]).agg(
        **{"epoch budget": ("epochs", "first"), "epochs trained": ("epochs_trained", "mean"),
           "selected epoch": ("selected_epoch", "mean"), "stopped early": ("stopped_before_budget", "sum"),
           "runs": ("seed", "size"), "dev macro-F1": ("dev_f1_macro", "mean"),
           "training min": ("train_time_s", lambda t: t.mean() / 60)})
    table["stopped early"] = table["stopped early"].astype(int).astype(str) + " of " + table.pop("runs").astype(str)
    return table


def describe_selection(table: pd.DataFrame) -> list[str]:
    """Sentences from `selection_table`: where each method was selected and whether it used its budget."""
    lines = []
    for (dataset, method), r in table.iterrows():
        lines.append(f"{dataset}, {method}: selected at epoch {r['selected epoch']:.1f} on average (dev macro-F1 "
                     f"{r['dev macro-F1']:.3f}); trained {r['epochs trained']:.1f} of {r['epoch budget']:.0f} epochs "
                     f"({r['training min']:.1f} min), stopped early in {r['stopped early']} runs"
                     + ("; its best dev score came, on average, in the last epoch of its budget: a larger budget "
                        "may still help" if r["selected epoch"] > r["epoch budget"] - 1 else "") + ".")
    return lines


# --- per-class analysis ---------------------------------------------------------------------------------------

def test_labels(dataset: str, data_dir=None) -> tuple[np.ndarray, list[str]]:
    """The test split's gold labels (in split order, as predictions.json) and the class names."""
    test = get_dataset(dataset, "[SEP]", data_dir)["test"]
    return np.array(test["label"]), list(test.features["label"].names)


def _runs_with_predictions(results, data_dir):
    labels = {}
    for _, run in results.iterrows():
        path = Path(run["run_dir"]) / "predictions.json"
        if not path.is_file():
            warnings.warn(f"{path} is missing: run left out of the per-class analysis", stacklevel=3)
            continue
        if run["dataset"] not in labels:
            labels[run["dataset"]] = test_labels(run["dataset"], data_dir)
        gold, names = labels[run["dataset"]]
        pred = np.array(json.loads(path.read_text()))
        if len(pred) != len(gold):
            raise ValueError(f"{path}: {len(pred)} predictions for {len(gold)} test examples of {run['dataset']}; "
                             "the run was evaluated on other data (check DATA_DIR)")
        yield run, gold, pred, names


def per_class_scores(results: pd.DataFrame, data_dir=None) -> pd.DataFrame:
    """One row per (run, class): the class's F1, its test support and how often the run predicted it (each
    method one configuration, each seed once: `one_config_per_group`)."""
    results = one_config_per_group(results, what="per_class_scores")
    rows = []
    for run, gold, pred, names in _runs_with_predictions(results, data_dir):
        classes = list(range(len(names)))
        f1 = f1_score(gold, pred, labels=classes, average=None, zero_division=0)
        predicted = np.bincount(pred, minlength=len(names))
        support = np.bincount(gold, minlength=len(names))
        for i, name in enumerate(names):
            rows.append({"dataset": run["dataset"], "method": run["method"],
                         "training_method": run.get("training_method"), "seed": run["seed"],
                         "run_dir": run["run_dir"], "class": name, "f1": f1[i], "support": int(support[i]),
                         "predicted": int(predicted[i])})
    return pd.DataFrame(rows)


def per_class_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-class F1, mean over seeds: rows (dataset, class) in the dataset's class order, one column per
    method, plus the class's test support."""
    order = {(d, c): i for i, (d, c) in enumerate(zip(scores["dataset"], scores["class"]))}
    table = scores.pivot_table(index=["dataset", "class"], columns="method", values="f1", aggfunc="mean")
    table.columns.name = None
    table["test support"] = scores.groupby(["dataset", "class"])["support"].first()
    return table.loc[sorted(table.index, key=lambda k: (k[0], order[k]))]


def confusion_matrices(results: pd.DataFrame, data_dir=None) -> dict:
    """{(dataset, method): confusion matrix (rows gold, columns predicted) as a DataFrame of counts, mean
    over seeds}, with `attrs["seeds"]` the number of runs averaged."""
    results = one_config_per_group(results, what="confusion_matrices")
    sums, counts = {}, {}
    names_of = {}
    for run, gold, pred, names in _runs_with_predictions(results, data_dir):
        key = (run["dataset"], run["method"])
        matrix = confusion_matrix(gold, pred, labels=list(range(len(names))))
        sums[key] = sums.get(key, 0) + matrix
        counts[key] = counts.get(key, 0) + 1
        names_of[key] = names
    out = {}
    for key in sorted(sums):
        frame = pd.DataFrame(sums[key] / counts[key], index=pd.Index(names_of[key], name="gold"),
                             columns=pd.Index(names_of[key], name="predicted"))
        frame.attrs["seeds"] = counts[key]
        out[key] = frame
    return out


def _seeds(seeds) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def never_predicted(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method): how many runs never predict at least one class, and which classes (with
    the seeds that never predict each)."""
    rows = []
    for (dataset, method), part in scores.groupby(["dataset", "method"], sort=True):
        missing = part[part["predicted"] == 0]
        by_class = missing.groupby("class", sort=False)["seed"].apply(lambda s: sorted(s.tolist()))
        classes_predicted = part[part["predicted"] > 0].groupby(["run_dir", "seed"])["class"].apply(list)
        single = sorted((seed, names[0]) for (_, seed), names in classes_predicted.items() if len(names) == 1)
        rows.append({"dataset": dataset, "method": method, "runs": part["run_dir"].nunique(),
                     "runs missing a class": missing["run_dir"].nunique(),
                     "runs predicting one class only": "; ".join(f"seed {s}: only {c}" for s, c in single) or "none",
                     "classes never predicted (seeds)": "; ".join(
                         f"{c} ({_seeds(s)})" for c, s in by_class.items()) or "none"})
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def class_balance(audits) -> pd.DataFrame:
    """The class balance of each dataset in full (from `audit_dataset` reports): counts and shares of
    train and test, one row per class, names whole."""
    rows = []
    for audit in audits:
        train, test = audit["train_labels"], audit["test_labels"]
        for name in train:
            rows.append({"dataset": audit["dataset"], "class": name, "train": train[name],
                         "train %": 100 * train[name] / sum(train.values()), "test": test.get(name, 0),
                         "test %": 100 * test.get(name, 0) / sum(test.values())})
    return pd.DataFrame(rows).set_index(["dataset", "class"]).round(1)


def majority_level(dataset: str, data_dir=None) -> float:
    """The test macro-F1 of always predicting the test split's most frequent class: 2p/(1+p) divided by
    the number of classes, p the majority share. A curve at this level has learned nothing per class."""
    gold, names = test_labels(dataset, data_dir)
    p = np.bincount(gold, minlength=len(names)).max() / len(gold)
    return float(2 * p / (1 + p) / len(names))


# --- statistics -----------------------------------------------------------------------------------------------

def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p-value an exact Wilcoxon signed-rank test can give over n pairs: 2 / 2^n
    (every pair in one direction). With 5 pairs it is 0.0625, so it can never reach 0.05."""
    return min(1.0, 2.0 / 2 ** n)


def paired_statistics(results: pd.DataFrame, method_a: str, method_b: str, metric: str = "f1_macro",
                      dataset: str | None = None) -> dict:
    """`paired_comparison` (b - a paired by seed: mean, 95 % t-interval, seeds b won) plus scipy's exact
    Wilcoxon signed-rank p-value, its floor for this many pairs, and a 95 % bootstrap interval of the mean
    difference (`scipy.stats.bootstrap`, percentile; coarse with few seeds)."""
    runs, wide = _paired_table(results, method_a, method_b, metric, dataset, "warn", "paired_statistics")
    out = paired_comparison(runs, method_a, method_b, metric)  # runs checked and deduplicated: no second warning
    wide = wide[[method_a, method_b]].dropna()
    diff = (wide[method_b] - wide[method_a]).to_numpy()
    n = len(diff)
    out.update(wilcoxon_p=np.nan, wilcoxon_min_p=min_wilcoxon_p(n), bootstrap_ci95=(np.nan, np.nan),
               b_wins=int((diff > 0).sum()), b_losses=int((diff < 0).sum()))
    if n >= 2 and np.any(diff != 0):
        out["wilcoxon_p"] = float(stats.wilcoxon(diff, method="exact").pvalue)
        if np.ptp(diff) > 0:
            boot = stats.bootstrap((diff,), np.mean, confidence_level=0.95, method="percentile",
                                   n_resamples=2000, random_state=0)
            out["bootstrap_ci95"] = (float(boot.confidence_interval.low), float(boot.confidence_interval.high))
    return out


def what_seeds_decide(n: int, paired: bool = True) -> str:
    """What n seeds per cell can and cannot decide, in words: paired by seed (methods of one model, which share
    the seed's data order and head initialisation), or, with `paired=False`, two independent samples (two
    models: seed k of one shares nothing with seed k of the other that makes a pair)."""
    if n < 2:
        return f"With {n} seed per cell nothing can be decided about seed noise."
    if not paired:
        df = 2 * n - 2
        return (f"With {n} seeds per model, two models are two independent samples: the difference of their means "
                f"has a 95 % interval of about ±{stats.t.ppf(0.975, df):.2f} standard errors (Welch's t, about {df} "
                f"degrees of freedom at equal spreads); seeds won is not defined across models, since seed k of one "
                f"model and seed k of another are not a pair. An interval that includes 0 means 'not decided', "
                f"not 'equal'.")
    t = stats.t.ppf(0.975, n - 1)
    return (f"With {n} paired seeds the 95 % t-interval is ±{t:.2f} standard errors wide (t with {n - 1} "
            f"degree{'s' if n > 2 else ''} of freedom), so only a difference large against its seed-to-seed spread excludes 0; an "
            f"exact Wilcoxon test over {n} pairs cannot go below p = {min_wilcoxon_p(n):.4g} even when one method "
            f"wins every seed, so it {'cannot' if min_wilcoxon_p(n) > 0.05 else 'can'} reach 0.05. "
            f"Seeds won is the plainest evidence at this size; an interval that includes 0 means 'not decided', "
            f"not 'equal'." + (f" A bootstrap over {n} differences only resamples those {n} numbers: its interval "
                               f"is narrower than the t-interval and under-covers; read it as descriptive."
                               if n < 10 else ""))


def compare_methods(results: pd.DataFrame, metric: str = "f1_macro") -> pd.DataFrame:
    """Each method against full fine-tuning of the same model on the same dataset (paired by seed), one row
    per (dataset, method): the means, the difference with its 95 % t- and bootstrap intervals (low, high), seeds won
    and lost, and the Wilcoxon p-value. Methods are told apart by the runs' config columns."""
    results = one_config_per_group(results, what="compare_methods")
    rows = []
    for (dataset, model), part in results.groupby(["dataset", "model_name"]):
        full = sorted(part.loc[part["training_method"] == "full", "method"].unique())
        others = sorted(part.loc[part["training_method"] != "full", "method"].unique())
        for base in full:
            for other in others:
                s = paired_statistics(part, base, other, metric)
                rows.append({"dataset": dataset, "method": other, "baseline": base,
                             f"{metric} method": part.loc[part.method == other, metric].mean(),
                             f"{metric} baseline": part.loc[part.method == base, metric].mean(),
                             "difference": s["mean_diff"], "t low": s["ci95"][0], "t high": s["ci95"][1],
                             "bootstrap low": s["bootstrap_ci95"][0], "bootstrap high": s["bootstrap_ci95"][1],
                             "paired seeds": s["n"],
                             "seeds won": s["b_wins"], "seeds lost": s["b_losses"],
                             "Wilcoxon p": s["wilcoxon_p"], "lowest possible p": s["wilcoxon_min_p"]})
    return pd.DataFrame(rows)


def format_interval(ci) -> str:
    """An interval as "[low, high]" with signs, or "n/a" where it is undefined (one seed)."""
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if np.all(np.isfinite(ci)) else "n/a"


def describe_comparisons(comparisons: pd.DataFrame, metric: str = "f1_macro") -> list[str]:
    """One sentence per row of `compare_methods`: the difference, its interval, seeds won, and what that
    decides."""
    lines = []
    for _, r in comparisons.iterrows():
        low, high = r["t low"], r["t high"]
        if r["paired seeds"] < 2:
            verdict = "too few paired seeds to decide"
        elif low > 0 or high < 0:
            verdict = f"the interval excludes 0: {'higher' if low > 0 else 'lower'} beyond seed noise"
        else:
            verdict = "the interval includes 0: not decided by these seeds"
        lines.append(
            f"{r['dataset']}: {r['method']} {r[f'{metric} method']:.3f} vs {r['baseline']} "
            f"{r[f'{metric} baseline']:.3f} {metric_name(metric)}; difference {r['difference']:+.3f}, 95 % "
            f"t-interval {format_interval((low, high))}; higher in {r['seeds won']} and lower in "
            f"{r['seeds lost']} of {r['paired seeds']} seeds; {verdict}.")
    return lines


# --- curves ---------------------------------------------------------------------------------------------------

def _last_epoch_gain(f1, epoch) -> float:
    """Mean test macro-F1 over the last epoch's evaluations minus the mean over the epoch before."""
    last = epoch > epoch[-1] - 1 + 1e-9
    before = (epoch > epoch[-1] - 2 + 1e-9) & ~last
    return float(f1[last].mean() - f1[before].mean()) if before.any() else float("nan")


def curve_facts(metrics: pd.DataFrame, levels: dict, margin: float = 0.01) -> pd.DataFrame:
    """Per run, from its test macro-F1 curve: the epochs it stayed at the majority-class level (`levels`,
    per dataset; within `margin`) before first rising above it, and whether it was still rising at the end
    (`last-epoch gain`: the mean over the last epoch's evaluations minus the mean over the epoch before)."""
    rows = []
    test = metrics[(metrics["split"] == "test")].dropna(subset=["f1_macro"])
    if "run_dir" in test:  # the curves of one configuration per method, each seed once
        runs = one_config_per_group(test.drop_duplicates("run_dir"), what="curve_facts")
        test = test[test["run_dir"].isin(runs["run_dir"])]
    for (dataset, method, seed), run in test.groupby(["dataset", "method", "seed"]):
        run = run.sort_values("step")
        f1, epoch = run["f1_macro"].to_numpy(), run["epoch"].to_numpy()
        above = np.nonzero(f1 > levels[dataset] + margin)[0]
        rows.append({"dataset": dataset, "method": method, "seed": seed,
                     "training_method": run["training_method"].iloc[0], "epochs": float(epoch[-1]),
                     "majority level": levels[dataset],
                     "epochs at majority level": float(epoch[above[0] - 1]) if len(above) and above[0] > 0
                     else (0.0 if len(above) else float(epoch[-1])),
                     "never left majority level": len(above) == 0,
                     "last-epoch gain": _last_epoch_gain(f1, epoch),
                     "final f1_macro": float(f1[-1])})
    return pd.DataFrame(rows)


def describe_curve_facts(facts: pd.DataFrame) -> list[str]:
    """Per (dataset, method): how long its macro-F1 stayed at the majority-class level and whether it was
    still rising when training stopped, in words."""
    lines = []
    for (dataset, method), part in facts.groupby(["dataset", "method"]):
        n = len(part)
        flat = part["epochs at majority level"]
        never = int(part["never left majority level"].sum())
        gain = part["last-epoch gain"]
        rising = int((gain > 0).sum())
        level = f"the majority-class level ({part['majority level'].iloc[0]:.3f})"
        span = f"{flat.min():.1f}" if flat.min() == flat.max() else f"{flat.min():.1f}–{flat.max():.1f}"
        text = (f"{dataset}, {method}: test macro-F1 was above {level} from the first evaluation"
                if flat.max() == 0 else f"{dataset}, {method}: test macro-F1 stayed at {level} for {span} of "
                f"{part['epochs'].max():.1f} epochs trained")
        text += f", and never left it in {never} of {n} seeds" if never else ""
        text += (f"; over the last epoch it rose by {gain.mean():+.3f} on average (rising in {rising} of {n} "
                 f"seeds)" if gain.notna().any() else "")
        lines.append(text + ".")
    return lines


def describe_collapse(missing: pd.DataFrame) -> list[str]:
    """Sentences on runs that never predict some class (from `never_predicted`)."""
    lines = []
    for (dataset, method), r in missing.iterrows():
        if r["runs missing a class"]:
            text = (f"{dataset}, {method}: {r['runs missing a class']} of {r['runs']} runs never predict some "
                    f"class: {r['classes never predicted (seeds)']}")
            if r.get("runs predicting one class only", "none") != "none":
                text += f"; predicting a single class: {r['runs predicting one class only']}"
            lines.append(text + ".")
    return lines or ["Every run predicts every class at least once."]
