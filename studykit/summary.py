"""The notebooks' opening summary: what ran, what did not (the full profile, stated cuts, missing cells), the
settings beside the report's with their reasons, and the learning rates that ran — generated from the runs and
the profiles, so it stays true when a notebook is re-run on another profile or when more runs land."""
from __future__ import annotations

import pandas as pd

from .hardware import hardware_label
from .profiles import PROFILES, models_run_on, study_configs
from .results import missing_cells

__all__ = ["what_ran", "settings_beside_report", "describe_learning_rates", "what_did_not_run", "summary_box"]


# --- what ran, and how it differs from the report -------------------------------------------------------------

def what_ran(results: pd.DataFrame) -> str:
    """Models, datasets, seeds, methods, hardware and precision of the runs on display, from their
    configs and summaries (the machine executing a notebook may not be the one that trained)."""
    if results.empty:
        return "No finished runs yet."
    precision = sorted({"fp32" if p in ("no", "fp32") else p for p in results["precision"].astype(str)})
    seeds = sorted(results["seed"].unique())
    per_cell = results.groupby(["dataset", "label"])["seed"].nunique()
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
                         "need a larger step; LoRA's 2e-3 was chosen on restaurant's dev split over Hu et al.'s 5e-4 "
                         "(with MiniLM); MPNet-base trains at the same rates, so the two sizes differ in the model only",
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


def _settings(task: str, profile: str, key: str) -> dict:
    """{dataset: "value and value"} of one setting over the profile's configs (RunConfig's own values and
    defaults; the method by `method_name`)."""
    values = {}
    for config in study_configs(task, profile):
        value = config.method_name if key == "method" else getattr(config, key)
        values.setdefault(config.dataset, set()).add(str(value))
    return {d: " and ".join(sorted(v)) for d, v in values.items()}


def _per_dataset(values: dict) -> str:
    distinct = set(values.values())
    if len(distinct) == 1:
        return distinct.pop()
    return " / ".join(f"{d.rsplit('_', 1)[0]} {v}" for d, v in values.items())


def settings_beside_report(task: str, profile: str = "reference") -> pd.DataFrame:
    """The profile's run settings beside the report's (the `full` profile's), one row per setting with the
    per-dataset values where they differ, and the reason for each difference."""
    rows = []
    for key in ("learning_rate", "epochs", "batch_size", "max_length", "evals_per_epoch", "precision",
                "adapter_size", "method", "early_stopping_patience"):
        ours, report = _settings(task, profile, key), _settings(task, "full", key)
        if set(ours.values()) == {"None"} and set(report.values()) == {"None"}:
            continue
        rows.append({"setting": key, profile: _per_dataset(ours), "report (full profile)": _per_dataset(report),
                     "why": "same" if ours == {d: report[d] for d in ours if d in report}
                     else _REASONS.get(profile, {}).get(key, "")})
    return pd.DataFrame(rows).set_index("setting")


def describe_learning_rates(configs, profile: str) -> list[str]:
    """The learning rates run here per method, beside the full profile's adapter rates (from its configs)."""
    ran = {}
    for c in configs:
        ran.setdefault(c.method_name, set()).add(c.learning_rate)
    lines = [f"{method} learning rates run here: {', '.join(f'{r:g}' for r in sorted(rates))}"
             for method, rates in sorted(ran.items())]
    report = settings_beside_report(configs[0].task, profile).loc["learning_rate", "report (full profile)"]
    lines.append(f"adapter learning rates of the full profile: {report} (per dataset: an adapter rate beside the "
                 "report's rate)")
    full_rates = sorted({c.learning_rate for c in study_configs(configs[0].task, "full")})
    not_here = [r for r in full_rates if r not in ran.get("adapter", set())]
    if not_here:
        lines.append(f"adapter rates of the full profile not run in this profile: {', '.join(f'{r:g}' for r in not_here)}")
    return lines


# --- the notebooks' summary boxes -------------------------------------------------------------------------------

def what_did_not_run(results: pd.DataFrame, task: str, profile: str, missing_configs=()) -> list[str]:
    """What the study plans but these results lack: the full profile, LoRA, the five seeds, and the cells of
    `missing_configs` (configs asked for and not finished, e.g. `load_study(...).attrs["missing_configs"]`)."""
    full = PROFILES[task]["full"]
    missing = []
    if profile != "full":
        missing.append(f"the full profile ({', '.join(full['models'])}; seeds {full['seeds'][0]}–{full['seeds'][-1]}; "
                       f"the report's settings; GPUs): not run in this copy — run it with PROFILE=full")
    for dataset in full["runs"]:  # a dataset cut for all of the profile's models, or for some (e.g. one size)
        planned = models_run_on(task, profile, dataset)
        cut = [m for m in PROFILES[task][profile]["models"] if m not in planned]
        if not cut:
            continue
        # another profile's runs of a cut cell may be read beside the grid (never trained here)
        ran = set(results.loc[results["dataset"] == dataset, "model_name"]) if not results.empty else set()
        read = sorted(ran - set(planned))
        where, read = (("own grid", f"; read here from another profile's runs: {', '.join(read)}") if read
                       else ("study", ""))
        whom = f" for {', '.join(cut)}" if planned else ""
        missing.append(f"{dataset}: left out of the {profile} profile's {where}{whom} (a stated budget cut; the "
                       f"reason is in studykit/profiles.py){read}")
    if task == "task3" and (results.empty or "lora" not in set(results["training_method"])):
        missing.append("LoRA (implemented: method='lora' through the same engine): no LoRA runs in these results")
    per_cell = results.groupby(["dataset", "label"])["seed"].nunique() if not results.empty else pd.Series(dtype=int)
    short = per_cell[per_cell < len(full["seeds"])]
    if results.empty:
        missing.append(f"{len(full['seeds'])} seeds per cell (the report's count): no runs yet")
    elif len(short):
        missing.append(f"{len(full['seeds'])} seeds per cell (the report's count): "
                       + "; ".join(f"{m} on {d} has {n}" for (d, m), n in short.items())
                       + " (fewer seeds, wider intervals; see the statistics section)")
    missing += missing_cells(missing_configs)
    return missing


def summary_box(title: str, ran: str, not_ran: list[str], findings: list[str]) -> str:
    """The notebook's opening summary as Markdown: what ran, what did not, and the main findings."""
    return "\n".join([f"### {title}", "", f"**What ran.** {ran}", "", "**What did not run.**",
                      *[f"- {m}" for m in not_ran or ["nothing: every planned run is here"]], "",
                      "**Main findings** (generated from the runs below).", *[f"- {f}" for f in findings]])
