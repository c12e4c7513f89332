"""What the runs show beyond their summaries: per-class scores and confusions from the saved predictions,
scores on the test texts unseen in training, learning-curve facts, selection on dev. Facts as tables, computed
from the results (`studykit.findings` words them)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from .data import get_dataset, test_overlap_mask
from .results import one_config_per_group

__all__ = ["test_labels", "per_class_scores", "per_class_table", "confusion_matrices", "never_predicted",
           "class_balance", "majority_level", "curve_facts", "selection_table", "overlap_effect"]


# --- selection on the dev split ---------------------------------------------------------------------------------

def selection_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, label), for runs selected on dev (`early_stopping_patience`): the epoch budget, the
    epochs trained before dev macro-F1 stopped improving, the epoch selected, how many runs stopped early,
    the dev macro-F1 selected, and the training time that took (mean over seeds). Empty without such runs."""
    if "selected_epoch" not in results or results["selected_epoch"].isna().all():
        return pd.DataFrame()
    runs = one_config_per_group(results.dropna(subset=["selected_epoch"]), what="selection_table")
    # From the epochs trained, not the summary's flag: runs of the first dev-selected grid set that flag when
    # the patience ran out at the very last evaluation too.
    runs = runs.assign(stopped_before_budget=runs["epochs_trained"] < runs["epochs"] - 1e-9)
    table = runs.groupby(["dataset", "label"]).agg(
        **{"epoch budget": ("epochs", "first"), "epochs trained": ("epochs_trained", "mean"),
           "selected epoch": ("selected_epoch", "mean"), "stopped early": ("stopped_before_budget", "sum"),
           "runs": ("seed", "size"), "dev macro-F1": ("dev_f1_macro", "mean"),
           "training min": ("train_time_s", lambda t: t.mean() / 60)})
    table["stopped early"] = table["stopped early"].astype(int).astype(str) + " of " + table.pop("runs").astype(str)
    return table


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
            rows.append({"dataset": run["dataset"], "label": run["label"], "model_name": run.get("model_name"),
                         "training_method": run.get("training_method"), "seed": run["seed"],
                         "run_dir": run["run_dir"], "class": name, "f1": f1[i], "support": int(support[i]),
                         "predicted": int(predicted[i])})
    return pd.DataFrame(rows)


def per_class_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-class F1, mean over seeds: rows (dataset, class) in the dataset's class order, one column per
    label, plus the class's test support."""
    order = {(d, c): i for i, (d, c) in enumerate(zip(scores["dataset"], scores["class"]))}
    table = scores.pivot_table(index=["dataset", "class"], columns="label", values="f1", aggfunc="mean")
    table.columns.name = None
    table["test support"] = scores.groupby(["dataset", "class"])["support"].first()
    return table.loc[sorted(table.index, key=lambda k: (k[0], order[k]))]


def confusion_matrices(results: pd.DataFrame, data_dir=None) -> dict:
    """{(dataset, label): confusion matrix (rows gold, columns predicted) as a DataFrame of counts, mean
    over seeds}, with `attrs["seeds"]` the number of runs averaged."""
    results = one_config_per_group(results, what="confusion_matrices")
    sums, counts = {}, {}
    names_of = {}
    for run, gold, pred, names in _runs_with_predictions(results, data_dir):
        key = (run["dataset"], run["label"])
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
    """Per (dataset, label): how many runs never predict at least one class, and which classes (with
    the seeds that never predict each)."""
    rows = []
    for (dataset, label), part in scores.groupby(["dataset", "label"], sort=True):
        missing = part[part["predicted"] == 0]
        by_class = missing.groupby("class", sort=False)["seed"].apply(lambda s: sorted(s.tolist()))
        classes_predicted = part[part["predicted"] > 0].groupby(["run_dir", "seed"])["class"].apply(list)
        single = sorted((seed, names[0]) for (_, seed), names in classes_predicted.items() if len(names) == 1)
        rows.append({"dataset": dataset, "label": label, "runs": part["run_dir"].nunique(),
                     "runs missing a class": missing["run_dir"].nunique(),
                     "runs predicting one class only": "; ".join(f"seed {s}: only {c}" for s, c in single) or "none",
                     "classes never predicted (seeds)": "; ".join(
                         f"{c} ({_seeds(s)})" for c, s in by_class.items()) or "none"})
    return pd.DataFrame(rows).set_index(["dataset", "label"])


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
    if "run_dir" in test:  # the curves of one configuration per label, each seed once
        runs = one_config_per_group(test.drop_duplicates("run_dir"), what="curve_facts")
        test = test[test["run_dir"].isin(runs["run_dir"])]
    for (dataset, label, seed), run in test.groupby(["dataset", "label", "seed"]):
        run = run.sort_values("step")
        f1, epoch = run["f1_macro"].to_numpy(), run["epoch"].to_numpy()
        above = np.nonzero(f1 > levels[dataset] + margin)[0]
        rows.append({"dataset": dataset, "label": label, "seed": seed,
                     "training_method": run["training_method"].iloc[0], "epochs": float(epoch[-1]),
                     "majority level": levels[dataset],
                     "epochs at majority level": float(epoch[above[0] - 1]) if len(above) and above[0] > 0
                     else (0.0 if len(above) else float(epoch[-1])),
                     "never left majority level": len(above) == 0,
                     "last-epoch gain": _last_epoch_gain(f1, epoch),
                     "final f1_macro": float(f1[-1])})
    return pd.DataFrame(rows)


def overlap_effect(results: pd.DataFrame, dataset: str, data_dir=None) -> pd.DataFrame:
    """Per label, macro-F1 and accuracy on the whole test split and on the test examples whose text does
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
        rows.append({"label": run["label"], "seed": run["seed"],
                     # over every class of the dataset, so both columns average over the same classes
                     "f1_macro_all": f1_score(labels, pred, average="macro", labels=classes, zero_division=0),
                     "f1_macro_unseen": f1_score(labels[unseen], pred[unseen], average="macro", labels=classes,
                                                 zero_division=0),
                     "accuracy_all": accuracy_score(labels, pred),
                     "accuracy_unseen": accuracy_score(labels[unseen], pred[unseen])})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby("label").mean(numeric_only=True).drop(columns="seed")
    return table.assign(test_examples=len(labels), unseen_examples=int(unseen.sum()))
