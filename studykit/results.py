"""Loading results: run folders into pandas frames, and the runs of exactly the configs asked for.

The first layer of reporting: `statistics` computes on these frames, `analysis` reads predictions and curves,
`findings` and `claims` word them. Nothing here tests or compares anything.

A results frame has one row per finished run: the run's config columns, its summary columns, and
- `training_method`: full, adapter or lora, as the engine recorded it (`RunConfig.method_name`);
- `label`: a short display name (model, method and its size, learning rate), for tables and legends only:
  never parse it, select on the config columns.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .config import RunConfig
from .hardware import hardware_label
from .profiles import study_configs
from .progress import format_duration
from .runs import dataset_label, run_folders

__all__ = ["METRICS", "METRIC_NAMES", "metric_name", "run_label", "recorded_method", "load_results", "load_metrics",
           "load_study", "compared_configs", "describe_runs", "missing_cells", "select_runs", "duplicate_seeds", "one_config_per_group",
           "DuplicateSeedWarning"]

# Micro-F1 is left out of the tables: for single-label classification it equals accuracy (it stays in the
# run summaries and metrics logs).
METRICS = ("accuracy", "f1_macro", "eval_loss")
METRIC_NAMES = {"f1_macro": "macro-F1", "accuracy": "accuracy", "eval_loss": "loss", "loss": "training loss",
                "f1_micro": "micro-F1"}


def metric_name(metric: str) -> str:
    """A metric's name in words, for titles and sentences."""
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def recorded_method(config: dict, summary: dict | None = None) -> str:
    """A run's training method (full, adapter or lora): the `training_method` its summary records, which the
    engine writes from `RunConfig.method_name`. Runs whose summary predates that field: the same property
    applied to the config's own fields (the one place the method is derived; never from a label)."""
    recorded = (summary or {}).get("training_method")
    if recorded:
        return recorded
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{k: v for k, v in config.items() if k in fields}).method_name


def run_label(config: dict, method: str) -> str:
    """The display label of a run: the model, the method (with the adapter size or LoRA rank) and the
    learning rate, e.g. "all-minilm-l6-v2 adapter64 lr=0.001"."""
    name = config["model_name"]
    if "/" in name and Path(name).exists():
        name = Path(name).name
    size = {"adapter": config.get("adapter_size"), "lora": config.get("lora_rank", 8)}.get(method, "")
    return f"{name} {method}{size} lr={config['learning_rate']:g}"


def _columns(config: dict, summary: dict | None) -> dict:
    method = recorded_method(config, summary)
    return {"training_method": method, "adapter_size": config.get("adapter_size"),
            "lora_rank": config.get("lora_rank", 8) if method == "lora" else None,
            "label": run_label(config, method), "dataset": dataset_label(config["dataset"])}


def load_results(results_dir="results", task: str | None = None, include_failed: bool = False) -> pd.DataFrame:
    """One row per finished run (config columns + summary columns + `training_method` and `label`);
    optionally failed runs too. The config's own `method` field (None where implied) is replaced by
    `training_method`, the method spelled out."""
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
        row = {**config, **outcome, **_columns(config, outcome), "run_dir": str(folder.path)}
        row.pop("method", None)
        rows.append(row)
    return pd.DataFrame(rows)


def load_metrics(results_dir="results", task: str | None = None) -> pd.DataFrame:
    """The metrics logs of all finished runs, long format, with the run's label, method, dataset, seed and
    folder (select the curves of a table's runs with `metrics[metrics.run_dir.isin(results.run_dir)]`)."""
    frames = []
    for folder in run_folders(results_dir, task):
        if not folder.is_done:
            continue
        config = folder.config()
        log = pd.read_json(folder.metrics_path, lines=True)
        frames.append(log.assign(**_columns(config, folder.summary()), seed=config["seed"], task=config["task"],
                                 model_name=config["model_name"], config_hash=folder.config_hash,
                                 run_dir=str(folder.path)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def describe_runs(results: pd.DataFrame) -> str:
    """Where the runs on display were produced and what they cost, read from their summaries (the machine
    executing the notebook may not be the one that trained: finished runs are reused)."""
    if results.empty:
        return "no finished runs"
    return (f"{len(results)} runs, produced on: {'; '.join(sorted({hardware_label(h) for h in results['hardware']}))}; "
            f"training time (evaluation excluded) {format_duration(results['train_time_s'].sum())} in all, "
            f"{format_duration(results['train_time_s'].mean())} per run on average")


# --- the runs of exactly these configs ------------------------------------------------------------------------

class DuplicateSeedWarning(UserWarning):
    """Two finished runs claim the same configuration and seed."""


def duplicate_seeds(results: pd.DataFrame) -> pd.DataFrame:
    """The rows that share a (config hash, seed) with another row: never two seeds to average."""
    if results.empty:
        return results
    return results[results.duplicated(["config_hash", "seed"], keep=False)].sort_values(["config_hash", "seed"])


def select_runs(results: pd.DataFrame, configs, on_duplicate: str = "warn") -> pd.DataFrame:
    """The finished runs of exactly these configs (matched by config hash: every setting and the data's
    content), never by label. A config and seed found in more than one folder is an error
    (`on_duplicate="error"`) or a warning naming the folders, keeping the first folder in path order.
    `attrs["missing"]` lists the folders of the configs not finished yet, `attrs["missing_configs"]` the configs."""
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
    missing = [c for k, c in wanted.items() if k not in found]
    chosen.attrs["missing"] = [str(c.run_dir) for c in missing]
    chosen.attrs["missing_configs"] = missing
    return chosen


def load_study(configs, on_duplicate: str = "warn") -> pd.DataFrame:
    """The finished runs of `configs`, read from each config's own results folder and task (configs of several
    profiles may live in several folders), as one frame; `attrs` as `select_runs` gives them. Reads only:
    nothing is trained."""
    frames, missing = [], []
    groups = {}
    for config in configs:
        groups.setdefault((config.results_dir, config.task), []).append(config)
    for (results_dir, task), part in groups.items():
        chosen = select_runs(load_results(results_dir, task=task), part, on_duplicate)
        frames.append(chosen)
        missing += chosen.attrs["missing_configs"]
    frames = [f for f in frames if not f.empty]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out.attrs["missing_configs"] = missing
    out.attrs["missing"] = [str(c.run_dir) for c in missing]
    return out


def compared_configs(tasks, profiles, configs, **overrides) -> list:
    """The configs of `profiles` (for each of `tasks`) in the (model, dataset) cells `configs` does not run: other
    models' runs, or this model's on a dataset the grid leaves out, to read beside this grid's, never to train. A
    cell the grid already runs is left out, so once a profile's runs move into the grid's own profile they are
    read from there, once. `overrides`: `study_configs`' (datasets, seeds, data_dir...)."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    ours = {(c.model_name, c.dataset) for c in configs}
    return [c for profile in profiles or () for task in tasks for c in study_configs(task, profile, **overrides)
            if (c.model_name, c.dataset) not in ours]


def missing_cells(configs) -> list[str]:
    """The configs not finished (`attrs["missing_configs"]`) as one line per cell: model, method, dataset and
    the seeds still missing, e.g. "all-mpnet-base-v2, full, acl_sup: seeds 1, 2, 3, 4, 5 not finished"."""
    cells = {}
    for c in configs:
        cells.setdefault((c.model_name, c.method_name, dataset_label(c.dataset), c.learning_rate), []).append(c.seed)
    return [f"{model}, {method} (lr {lr:g}), {dataset}: seed{'s' if len(seeds) > 1 else ''} "
            f"{', '.join(map(str, sorted(seeds)))} not finished"
            for (model, method, dataset, lr), seeds in sorted(cells.items())]


# --- aggregating runs: one configuration per group, one run per seed ------------------------------------------

# The settings that tell configurations apart where a table has no config_hash column (a hand-made table).
_SETTINGS = [f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("hash") != "never"]


def _config_keys(results: pd.DataFrame, by=()) -> pd.Series:
    """Each row's configuration: its config hash, else the settings the table has and its `by` columns (a
    hand-made table: rows of different groups are never one configuration)."""
    if "config_hash" in results:
        return results["config_hash"].astype(str)
    columns = [c for c in _SETTINGS if c in results] + [c for c in by if c in results and c not in _SETTINGS]
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


def one_config_per_group(results: pd.DataFrame, by=("dataset", "label"), on_duplicate: str = "warn",
                         what: str = "this table") -> pd.DataFrame:
    """`results` ready to aggregate over seeds within each `by` group: every group must hold one configuration
    (one config hash; a table without that column: one set of settings), else a ValueError names the group,
    the settings that differ and the fix. A configuration and seed found in more than one run is an error
    (`on_duplicate="error"`) or a warning naming the folders, keeping the first folder in path order, exactly
    as `select_runs` does. Every public function that aggregates runs calls this first."""
    if results.empty:
        return results
    by = [c for c in by if c in results]
    keys = _config_keys(results, by)
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
