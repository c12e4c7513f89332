"""The notebooks' summary boxes and findings: what ran, what did not, the settings beside the report's, and
the main results in sentences — all generated from the runs, so they stay true when a notebook is re-run on
another profile."""
from __future__ import annotations

import dataclasses

import pandas as pd

from .analysis import format_interval, paired_statistics
from .config import RunConfig
from .hardware import hardware_label
from .profiles import PROFILES

__all__ = ["what_ran", "settings_beside_report", "time_per_epoch", "what_did_not_run", "task2_findings",
           "task3_findings", "summary_box", "adapter_share", "describe_time_per_epoch"]


# --- what ran, and how it differs from the report -------------------------------------------------------------

def time_per_epoch(results: pd.DataFrame) -> pd.DataFrame:
    """Seconds per epoch with and without the evaluations run during training, mean per (dataset, method).

    Per epoch of training done: a run that selection on dev stopped mid-epoch counts that epoch's fraction
    (`epochs_trained`; older runs without it trained whole epochs, `epochs_run`)."""
    epochs = results["epochs_trained"] if "epochs_trained" in results else results["epochs_run"]
    epochs = epochs.fillna(results["epochs_run"])
    frame = results.assign(**{"s/epoch, training only": results["train_time_s"] / epochs,
                              "s/epoch incl. evaluations": results["time_per_epoch_s"] * results["epochs_run"] / epochs})
    cols = ["s/epoch, training only", "s/epoch incl. evaluations", "train_samples_per_s"]
    return frame.groupby(["dataset", "method"])[cols].mean().rename(
        columns={"train_samples_per_s": "training examples/s"})


def what_ran(results: pd.DataFrame) -> str:
    """Models, datasets, seeds, methods, hardware and precision of the runs on display, from their
    configs and summaries (the machine executing a notebook may not be the one that trained)."""
    if results.empty:
        return "No finished runs yet."
    precision = sorted({"fp32" if p in ("no", "fp32") else p for p in results["precision"].astype(str)})
    seeds = sorted(results["seed"].unique())
    per_cell = results.groupby(["dataset", "method"])["seed"].nunique()
    return (f"{len(results)} runs: {', '.join(sorted(results['model_name'].unique()))}; "
            f"methods {', '.join(sorted(results['training_method'].unique()))}; datasets "
            f"{', '.join(sorted(results['dataset'].unique()))}; seeds {', '.join(map(str, seeds))} "
            f"({per_cell.min()}–{per_cell.max()} per dataset × method); trained on "
            f"{'; '.join(sorted({hardware_label(h) for h in results['hardware']}))}; precision {', '.join(precision)}.")


# Why each profile departs from the report's settings (studykit/profiles.py says the same).
_REASONS = {
    "reference": {
        "learning_rate": "1e-5 under-trains the 22 M-parameter MiniLM in a few CPU epochs; adapters (1e-3, Houlsby "
                         "et al.'s range, not tuned: the CPU budget) and LoRA train a few percent of the weights and "
                         "need a larger step; LoRA's 2e-3 was chosen on restaurant's dev split over Hu et al.'s 5e-4",
        "epochs": "the most epochs a run may take on the 2-core CPU budget (acl more: its 1,688 examples give few "
                  "steps; adapters and LoRA 1.5x full fine-tuning); selection on dev picks the evaluation reported",
        "batch_size": "CPU time per step; acl uses 16 so that its small training split gives enough steps",
        "evals_per_epoch": "each evaluation (dev and test) costs CPU time",
        "precision": "pinned to bf16 autocast, the precision the committed runs were trained in (on a CPU with "
                     "AMX), so the report renders from them on any CPU; the full profile's auto is bf16 on GPUs "
                     "too (bench/parity.py compares fp32 and bf16 runs)",
        "early_stopping_patience": "the report trains a fixed number of epochs and reports the last; here each "
                                   "method is selected on the dev split (patience in evaluations)",
        "method": "the reference profile adds LoRA beside the adapters",
        "adapter_size": "LoRA runs have no adapters (None)",
    },
    "fast": {
        "learning_rate": "a randomly initialized tiny model needs a large step",
        "epochs": "many passes over the 96 fixture examples",
        "batch_size": "the fixtures are 96 examples",
        "evals_per_epoch": "the fast profile proves the code path, not the study",
        "precision": "a CPU trains in fp32",
        "adapter_size": "the tiny model is only a few dozen units wide",
        "early_stopping_patience": "selected on the fixtures' dev splits, as the reference runs are",
    },
}
# A variant that leaves a setting out runs RunConfig's default: read from the dataclass, never copied.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}


def _setting(variant: dict, key: str) -> str:
    """A profile variant's value of `key` as shown; the method by name (implied by adapter_size when unset)."""
    if key == "method":
        return variant.get("method") or ("adapter" if variant.get("adapter_size") else "full")
    return str(variant.get(key, _DEFAULTS.get(key)))


def _per_dataset(values: dict) -> str:
    distinct = set(map(str, values.values()))
    if len(distinct) == 1:
        return distinct.pop()
    return " / ".join(f"{d.rsplit('_', 1)[0]} {v}" for d, v in values.items())


def settings_beside_report(task: str, profile: str = "reference") -> pd.DataFrame:
    """The profile's run settings beside the report's (the `full` profile's), one row per setting with the
    per-dataset values where they differ, and the reason for each difference."""
    rows = []
    ours_runs, report_runs = PROFILES[task][profile]["runs"], PROFILES[task]["full"]["runs"]
    for key in ("learning_rate", "epochs", "batch_size", "max_length", "evals_per_epoch", "precision",
                "adapter_size", "method", "early_stopping_patience"):
        ours = {d: sorted({_setting(v, key) for v in vs}) for d, vs in ours_runs.items()}
        report = {d: sorted({_setting(v, key) for v in vs}) for d, vs in report_runs.items()}
        ours, report = ({d: " and ".join(v) for d, v in x.items()} for x in (ours, report))
        if set(ours.values()) == {"None"} and set(report.values()) == {"None"}:
            continue
        rows.append({"setting": key, profile: _per_dataset(ours), "report (full profile)": _per_dataset(report),
                     "why": "same" if ours == {d: report[d] for d in ours if d in report} else _REASONS.get(profile, {}).get(key, "")})
    return pd.DataFrame(rows).set_index("setting")


# --- the notebooks' summary boxes and conclusions -------------------------------------------------------------

def what_did_not_run(results: pd.DataFrame, task: str, profile: str) -> list[str]:
    """What the study plans but these results lack: the full profile, LoRA, the five seeds (from PROFILES
    and the runs, so the list empties itself as runs arrive)."""
    full = PROFILES[task]["full"]
    missing = []
    if profile != "full":
        missing.append(f"the full profile ({', '.join(full['models'])}; seeds {full['seeds'][0]}–{full['seeds'][-1]}; "
                       f"the report's settings; GPUs): not run in this copy — run it with PROFILE=full")
    cut = [d for d in full["runs"] if d not in PROFILES[task][profile]["runs"]]
    if cut:
        missing.append(f"{', '.join(cut)}: left out of the {profile} profile's study (a stated budget cut; the reason "
                       f"is in studykit/profiles.py)")
    if task == "task3" and (results.empty or "lora" not in set(results["training_method"])):
        missing.append("LoRA (implemented: method='lora' through the same engine): no LoRA runs in these results")
    per_cell = results.groupby(["dataset", "method"])["seed"].nunique() if not results.empty else pd.Series(dtype=int)
    short = per_cell[per_cell < len(full["seeds"])]
    if results.empty:
        missing.append(f"{len(full['seeds'])} seeds per cell (the report's count): no runs yet")
    elif len(short):
        missing.append(f"{len(full['seeds'])} seeds per cell (the report's count): "
                       + "; ".join(f"{m} on {d} has {n}" for (d, m), n in short.items())
                       + " (fewer seeds, wider intervals; see the statistics section)")
    return missing


def _per_dataset_scores(results: pd.DataFrame, metric: str = "f1_macro") -> str:
    means = results.groupby(["dataset", "method"])[metric].mean()
    return "; ".join(f"{d} {v:.3f}" for (d, _), v in means.items())


def task2_findings(results: pd.DataFrame, missing: pd.DataFrame, scores: pd.DataFrame | None = None) -> list[str]:
    """The main findings of Task 2 in a few sentences, from the runs (`missing`: `never_predicted`;
    `scores`: `per_class_scores`, for each dataset's weakest class)."""
    if results.empty:
        return ["No finished runs: nothing to report yet."]
    lines = []
    models = sorted(results["model_name"].unique())
    for dataset, part in results.groupby("dataset"):
        means = part.groupby("method")["f1_macro"].mean().sort_values(ascending=False)
        acc = part.groupby("method")["accuracy"].mean()[means.index[0]]
        text = f"{dataset}: " + (f"{means.index[0]} reaches test macro-F1 {means.iloc[0]:.3f} (accuracy {acc:.3f})"
                                 if len(means) == 1 else
                                 f"best {means.index[0]} ({means.iloc[0]:.3f} macro-F1) ahead of {means.index[1]} "
                                 f"({means.iloc[1]:.3f})")
        if len(means) > 1:
            cmp = paired_statistics(part, means.index[1], means.index[0], "f1_macro")
            low, high = cmp["ci95"]
            decided = ("beyond seed noise" if low > 0 or high < 0 else "not decided by these seeds")
            text += (f", higher in {cmp['b_wins']} of {cmp['n']} seeds, 95 % t-interval of the difference "
                     f"{format_interval(cmp['ci95'])}: {decided}")
        if scores is not None and not scores.empty:
            best = scores[(scores["dataset"] == dataset) & (scores["method"] == means.index[0])]
            per_class = best.groupby("class", sort=False)["f1"].mean()
            if len(per_class):
                text += f"; its weakest class is {per_class.idxmin()} (F1 {per_class.min():.3f})"
        gone = missing.loc[dataset] if dataset in missing.index.get_level_values(0) else None
        if gone is not None:
            for method, r in gone.iterrows():
                if r["runs missing a class"]:
                    who = "it" if len(means) == 1 else method
                    text += (f"; in {r['runs missing a class']} of {r['runs']} runs {who} never predicts "
                             f"{r['classes never predicted (seeds)']}")
        lines.append(text + ".")
    if len(models) == 1:
        lines.insert(0, f"Only one model ran ({models[0]}), so which model is best cannot be answered from these "
                        "runs; they show what full fine-tuning reaches per dataset and where macro-F1 is lost.")
    return lines


# Houlsby et al. 2019 report adapters within about 1 % of full fine-tuning; the study asks for 0.05 macro-F1.
CLOSE_TO_FULL = 0.05


def task3_findings(comparisons: pd.DataFrame, cost: pd.DataFrame | None = None) -> list[str]:
    """The main findings of Task 3: per dataset, each method against full fine-tuning (difference, seeds
    won, interval), and the share of weights trained (`cost` with trainable_params and total_params)."""
    if comparisons.empty:
        return ["No dataset has both full fine-tuning and another method finished: nothing to compare yet."]
    lines = []
    for method, part in comparisons.groupby("method"):
        lost = int((part["seeds lost"] == part["paired seeds"]).sum())
        decided = part[(part["t low"] > 0) | (part["t high"] < 0)]
        close = int((part["difference"].abs() <= CLOSE_TO_FULL).sum())
        text = (f"{method} vs full fine-tuning (test macro-F1): "
                + "; ".join(f"{r.dataset} {r.difference:+.3f} (higher in {r['seeds won']}, lower in {r['seeds lost']} "
                            f"of {r['paired seeds']} seeds)" for _, r in part.iterrows())
                + f". Its mean is within {CLOSE_TO_FULL} of full fine-tuning on {close} of {len(part)} datasets; it is "
                  f"below in every seed on {lost} of {len(part)}; the 95 % t-interval excludes 0 on {len(decided)} "
                  f"of {len(part)}.")
        lines.append(text)
    if cost is not None and not cost.empty:
        share = (cost["trainable_params"] / cost["total_params"]).groupby(level="method").mean()
        lines.append("Weights trained: " + "; ".join(f"{m} {100 * s:.1f} %" for m, s in share.items()) + ".")
    return lines


def summary_box(title: str, ran: str, not_ran: list[str], findings: list[str]) -> str:
    """The notebook's opening summary as Markdown: what ran, what did not, and the main findings."""
    return "\n".join([f"### {title}", "", f"**What ran.** {ran}", "", "**What did not run.**",
                      *[f"- {m}" for m in not_ran or ["nothing: every planned run is here"]], "",
                      "**Main findings** (generated from the runs below).", *[f"- {f}" for f in findings]])


def adapter_share(model_config, adapter_size: int, num_labels: int) -> dict:
    """Where an adapter model's trainable share comes from, counted on the architecture built on the meta
    device (no weights): layers L, width d, adapter, LayerNorm, head and embedding parameters, and the
    percentage trained. The share grows with m/d (adapters ~4·m·d per layer against ~12·d² for the layer),
    shrinks with the embedding table, and includes the classification head (RoBERTa's has a d×d dense layer,
    BERT's is one linear layer on the frozen pooler)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from .adapters import add_adapters, count_parameters

    config = model_config.__class__.from_dict(model_config.to_dict())
    config.num_labels = num_labels
    with torch.device("meta"):
        model = add_adapters(AutoModelForSequenceClassification.from_config(config), adapter_size)
    counts = count_parameters(model)
    parts = {k: v["total"] for k, v in counts["by_component"].items()}
    return {"layers L": config.num_hidden_layers, "width d": config.hidden_size, "bottleneck m": adapter_size,
            "adapter params": parts.get("adapters", 0), "LayerNorm params": parts.get("layer_norm", 0),
            "head params": parts.get("head", 0), "trainable params": counts["trainable"],
            "total params": counts["total"], "embedding share of total %": 100 * parts.get("embeddings", 0) / counts["total"],
            "trainable %": counts["percent_trainable"]}


def describe_time_per_epoch(table: pd.DataFrame) -> list[str]:
    """Sentences from `time_per_epoch`: the seconds per epoch with and without the test evaluations."""
    lines = []
    for (dataset, method), r in table.iterrows():
        train, total = r["s/epoch, training only"], r["s/epoch incl. evaluations"]
        lines.append(f"{dataset}, {method}: {train:.3g} s per epoch of training, {total:.3g} s with the test "
                     f"evaluations ({total / train - 1:+.0%}); {r['training examples/s']:.3g} training examples/s.")
    return lines
