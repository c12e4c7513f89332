"""The notebooks' findings: the main results in sentences — generated from the runs (and `statistics`' verdicts,
worded once there), so they stay true when a notebook is re-run on another profile or when more runs land. The
opening summary (what ran, what did not) is `summary`'s."""
from __future__ import annotations

import pandas as pd

from .results import metric_name, missing_cells, one_config_per_group
from .statistics import (compare_models, compare_sizes, decide, format_interval, independent_comparison, paired_comparison,
                         verdict, what_seeds_decide)

__all__ = ["describe_ranking", "task2_findings", "task3_findings", "describe_comparisons", "describe_model_comparisons",
           "describe_class_differences", "describe_sizes", "describe_selection", "describe_curve_facts",
           "describe_collapse", "describe_method_costs", "describe_budgets", "task3_answers", "CLOSE_TO_FULL"]


# --- shared wording ------------------------------------------------------------------------------------------

def _seeds(n) -> str:
    return f"{int(n)} seed{'' if int(n) == 1 else 's'}"


def _in_last_epoch(selected_epoch: float, budget: float) -> bool:
    """Whether dev selected an evaluation in the last epoch of the budget (the method may still have improved)."""
    return selected_epoch > budget - 1


# --- Task 2: which model is best ------------------------------------------------------------------------------

def _lead(part: pd.DataFrame, runner_up: str, best: str, metric: str, higher_is_better: bool = True) -> dict:
    """The best label's lead over the runner-up: paired by seed within one model, independent samples across
    two models (`statistics`' docstring says why). Returns n, mean_diff, ci95, verdict and `evidence` in words."""
    model = part.groupby("label")["model_name"].first() if "model_name" in part else None
    if model is not None and model[best] != model[runner_up]:
        s = independent_comparison(part.loc[part.label == runner_up, metric], part.loc[part.label == best, metric])
        better = s["prob_b_beats_a"] if higher_is_better else 1 - s["prob_b_beats_a"]  # ties count half either way
        beats = "beats" if higher_is_better else f"has a lower {metric_name(metric)} than"
        return {**s, "n": min(s["n_a"], s["n_b"]),
                "evidence": (f"a random run of it {beats} a random run of {runner_up} in {better:.0%} of the "
                             f"{s['pairs']} pairs of runs ({s['n_b']} and {s['n_a']} seeds, independent samples), Welch "
                             f"95 % interval of the difference {format_interval(s['ci95'])}")}
    s = paired_comparison(part, runner_up, best, metric)
    return {**s, "evidence": (f"higher in {s['b_wins']} of {s['n']} seeds, 95 % t-interval of the paired "
                              f"difference {format_interval(s['ci95'])}")}


def describe_ranking(results: pd.DataFrame, metric: str = "f1_macro", higher_is_better: bool = True) -> list[str]:
    """Per dataset: the best label by mean `metric`, and whether its lead over the runner-up is beyond seed
    noise (paired by seed within a model, independent samples across models)."""
    results = one_config_per_group(results, what="describe_ranking")
    lines = []
    for dataset, part in results.groupby("dataset"):
        means = part.groupby("label")[metric].mean().sort_values(ascending=not higher_is_better)
        if len(means) == 1:
            lines.append(f"{dataset}: only {means.index[0]} ran ({metric_name(metric)} {means.iloc[0]:.3f}).")
            continue
        best, second = means.index[0], means.index[1]
        lead = _lead(part, second, best, metric, higher_is_better)
        lines.append(f"{dataset}: {best} has the best mean {metric_name(metric)} ({means.iloc[0]:.3f}) ahead of "
                     f"{second} ({means.iloc[1]:.3f}); {lead['evidence']}: {lead['verdict']}.")
    return lines


def task2_findings(results: pd.DataFrame, missing: pd.DataFrame, scores: pd.DataFrame | None = None,
                   missing_configs=()) -> list[str]:
    """The main findings of Task 2 in a few sentences, from the runs (`missing`: `never_predicted`;
    `scores`: `per_class_scores`, for each dataset's weakest class; `missing_configs`: configs of the model
    comparison not finished, named so that a comparison not yet possible says what it waits for)."""
    if results.empty:
        return ["No finished runs: nothing to report yet."]
    results = one_config_per_group(results, what="task2_findings")
    lines = []
    models = sorted(results["model_name"].unique())
    for dataset, part in results.groupby("dataset"):
        means = part.groupby("label")["f1_macro"].mean().sort_values(ascending=False)
        acc = part.groupby("label")["accuracy"].mean()[means.index[0]]
        text = f"{dataset}: " + (f"{means.index[0]} reaches test macro-F1 {means.iloc[0]:.3f} (accuracy {acc:.3f})"
                                 if len(means) == 1 else
                                 f"best {means.index[0]} ({means.iloc[0]:.3f} macro-F1) ahead of {means.index[1]} "
                                 f"({means.iloc[1]:.3f})")
        models_of = part.groupby("label")["model_name"].first()
        if len(means) > 1 and models_of[means.index[0]] == models_of[means.index[1]]:
            lead = _lead(part, means.index[1], means.index[0], "f1_macro")
            text += f"; {lead['evidence']}: {lead['verdict']}"
        elif len(means) > 1:
            text += " (two models: compared as independent samples below)"
        if scores is not None and not scores.empty:
            best = scores[(scores["dataset"] == dataset) & (scores["label"] == means.index[0])]
            per_class = best.groupby("class", sort=False)["f1"].mean()
            if len(per_class):
                text += f"; its weakest class is {per_class.idxmin()} (F1 {per_class.min():.3f})"
        gone = missing.loc[dataset] if dataset in missing.index.get_level_values(0) else None
        if gone is not None:
            for label, r in gone.iterrows():
                if r["runs missing a class"]:
                    who = "it" if len(means) == 1 else label
                    text += (f"; in {r['runs missing a class']} of {r['runs']} runs {who} never predicts "
                             f"{r['classes never predicted (seeds)']}")
        lines.append(text + ".")
    if len(models) == 1 and not missing_configs:
        lines.insert(0, f"Only one model ran ({models[0]}), so which model is best cannot be answered from these "
                        "runs; they show what full fine-tuning reaches per dataset and where macro-F1 is lost.")
    lines += describe_model_comparisons(compare_models(results), missing_configs=missing_configs)
    return lines


def describe_model_comparisons(table: pd.DataFrame, metric: str = "f1_macro", missing_configs=()) -> list[str]:
    """One sentence per row of `compare_models`: both models' means and seeds, the difference with Welch's
    interval, P(a run of the larger model beats a run of the smaller) over the n_a x n_b pairs, and the
    verdict; then the cells the comparison still lacks (`missing_configs`)."""
    lines = []
    for _, r in table.iterrows():
        lines.append(
            f"{r['dataset']}, {r['model b']} vs {r['model a']} (full fine-tuning): {metric_name(metric)} "
            f"{r[f'{metric} b']:.3f} ({_seeds(r['n b'])}) vs {r[f'{metric} a']:.3f} ({_seeds(r['n a'])}); difference "
            f"{r['difference']:+.3f}, Welch 95 % interval {format_interval((r['Welch low'], r['Welch high']))} "
            f"(independent samples: different models' seeds are not pairs); a random {r['model b']} run beats a random "
            f"{r['model a']} run in {r['P(b beats a)']:.0%} of the {r['pairs']} pairs; {r['verdict']}.")
    cells = missing_cells(missing_configs)
    if cells:
        lines.append("The model comparison still lacks: " + "; ".join(cells) + " (those cells are left out above, "
                     "never estimated).")
    return lines


def describe_class_differences(table: pd.DataFrame) -> list[str]:
    """From `compare_models_per_class`: the classes where two models' F1 differs beyond seed noise, and how
    many do not."""
    lines = []
    for (dataset, a, b), part in table.groupby(["dataset", "model a", "model b"], sort=False) if len(table) else []:
        differ = part[[decide((r["Welch low"], r["Welch high"]), min(r["n a"], r["n b"])) in ("higher", "lower")
                       for _, r in part.iterrows()]]
        text = (f"{dataset}, per class, {b} vs {a}: " + ("; ".join(
            f"{r['class']} {r['f1 b']:.3f} vs {r['f1 a']:.3f} (difference {r['difference']:+.3f}, Welch "
            f"{format_interval((r['Welch low'], r['Welch high']))})" for _, r in differ.iterrows())
            or "no class differs beyond seed noise"))
        rest = len(part) - len(differ)
        lines.append(text + (f"; the other {rest} class{'es' if rest > 1 else ''} not decided by these seeds."
                             if differ.size and rest else "."))
    return lines


# --- Task 3: adapters and LoRA against full fine-tuning ---------------------------------------------------------

def describe_comparisons(comparisons: pd.DataFrame, metric: str = "f1_macro") -> list[str]:
    """One sentence per row of `compare_methods`: the difference, its interval, seeds won, and the verdict."""
    lines = []
    for _, r in comparisons.iterrows():
        lines.append(
            f"{r['dataset']}: {r['label']} {r[f'{metric} method']:.3f} vs {r['baseline']} "
            f"{r[f'{metric} baseline']:.3f} {metric_name(metric)}; difference {r['difference']:+.3f}, 95 % "
            f"t-interval {format_interval((r['t low'], r['t high']))}; higher in {r['seeds won']} and lower in "
            f"{r['seeds lost']} of {r['paired seeds']} seeds; {verdict((r['t low'], r['t high']), r['paired seeds'])}.")
    return lines


# Houlsby et al. 2019 report adapters within about 1 % of full fine-tuning; the study asks for 0.05 macro-F1.
CLOSE_TO_FULL = 0.05


def describe_sizes(results: pd.DataFrame, missing_configs=(), metric: str = "f1_macro") -> list[str]:
    """Task 3 at two sizes: per dataset and method, the gap to full fine-tuning at each model and whether it
    changes with the model (`compare_sizes`); the cells still missing are named, never estimated."""
    lines = []
    for _, r in compare_sizes(results, metric).iterrows():
        lines.append(f"{r['dataset']}, {r['training_method']} minus full fine-tuning ({metric_name(metric)}): "
                     f"{r['gap a']:+.3f} at {r['model a']} ({_seeds(r['n a'])}), {r['gap b']:+.3f} at {r['model b']} "
                     f"({_seeds(r['n b'])}); the gap changes by {r['change']:+.3f}, Welch 95 % interval "
                     f"{format_interval((r['Welch low'], r['Welch high']))}: {r['verdict']}.")
    if not lines:
        runs = results if len(results) else pd.DataFrame(columns=["model_name", "training_method"])
        methods = runs.groupby("model_name")["training_method"].agg(lambda m: sorted(set(m)))
        lines.append("The gap to full fine-tuning at two model sizes cannot be compared yet: it needs two models with "
                     "full fine-tuning and another method on one dataset; these runs have "
                     + ("; ".join(f"{m}: {', '.join(v)}" for m, v in methods.items()) or "none") + ".")
    # cells still missing, when the runs and the missing cells hold two models at all (else no comparison is planned)
    models = set(results["model_name"] if len(results) else []) | {c.model_name for c in missing_configs}
    cells = missing_cells(missing_configs) if len(models) > 1 else []
    if cells:
        lines.append("The two-size comparison still lacks: " + "; ".join(cells) + ".")
    return lines


def task3_findings(comparisons: pd.DataFrame, costs: pd.DataFrame | None = None,
                   sizes: list[str] | None = None) -> list[str]:
    """The main findings of Task 3: per dataset, each method against full fine-tuning (difference, seeds
    won, interval), the share of weights trained (`costs`: `method_costs`, or any frame with trainable_params
    and total_params per (dataset, label)), and the two-size sentences (`sizes`: `describe_sizes`)."""
    if comparisons.empty:
        return ["No dataset has both full fine-tuning and another method finished: nothing to compare yet."] \
            + list(sizes or [])
    lines = []
    for label, part in comparisons.groupby("label"):
        lost = int((part["seeds lost"] == part["paired seeds"]).sum())
        decided = [r for _, r in part.iterrows()
                   if decide((r["t low"], r["t high"]), r["paired seeds"]) in ("higher", "lower")]
        close = int((part["difference"].abs() <= CLOSE_TO_FULL).sum())
        lines.append(f"{label} vs full fine-tuning (test macro-F1): "
                     + "; ".join(f"{r.dataset} {r.difference:+.3f} (higher in {r['seeds won']}, lower in "
                                 f"{r['seeds lost']} of {r['paired seeds']} seeds)" for _, r in part.iterrows())
                     + f". Its mean is within {CLOSE_TO_FULL} of full fine-tuning on {close} of {len(part)} datasets; "
                       f"it is below in every seed on {lost} of {len(part)}; the 95 % t-interval excludes 0 on "
                       f"{len(decided)} of {len(part)}.")
    if costs is not None and not costs.empty:
        share = (costs["trainable_params"] / costs["total_params"]).groupby(level="label").mean()
        lines.append("Weights trained: " + "; ".join(f"{m} {100 * s:.1f} %" for m, s in share.items()) + ".")
    return lines + list(sizes or [])


def describe_method_costs(costs: pd.DataFrame, memory: pd.DataFrame | None = None) -> list[str]:
    """Per dataset and method (`method_costs`): share trained, checkpoint, seconds per training epoch and
    training-step memory (`training_memory`), each against full fine-tuning of the same model."""
    lines = []
    for dataset, part in costs.groupby(level="dataset"):
        part = part.droplevel("dataset")
        for label, row in part[part["training_method"] != "full"].iterrows():
            text = (f"{dataset}, {label}: {row['trainable %']:.1f} % of the weights trained, checkpoint "
                    f"{row.checkpoint_MB:.1f} MB, {row['s/epoch, training only']:.3g} s per training epoch")
            full = part[(part["training_method"] == "full") & (part["model_name"] == row["model_name"])]
            if len(full):
                base = full.iloc[0]
                text += (f" vs {base['s/epoch, training only']:.3g} s for full fine-tuning "
                         f"({row['s/epoch, training only'] / base['s/epoch, training only']:.0%})")
                if memory is not None:
                    step = memory.loc[(dataset, label), "total"] / memory.loc[(dataset, full.index[0]), "total"]
                    text += f"; training step memory {step:.0%} of full fine-tuning's"
            lines.append(text + ".")
    return lines


def describe_budgets(results: pd.DataFrame) -> list[str]:
    """Per dataset and model selected on dev: where full fine-tuning's best dev score came in the last epoch of its
    budget while another method had more epochs, a method's lead there may be budget as much as method."""
    runs = results.dropna(subset=["selected_epoch"]) if "selected_epoch" in results else results.iloc[0:0]
    lines = []
    for (dataset, model), part in runs.groupby(["dataset", "model_name"]):
        by_method = part.groupby("training_method").agg(budget=("epochs", "first"), selected=("selected_epoch", "mean"))
        if "full" not in by_method.index:
            continue
        full = by_method.loc["full"]
        longer = by_method[by_method["budget"] > full["budget"]]
        if _in_last_epoch(full["selected"], full["budget"]) and len(longer):
            lines.append(f"{dataset}, {model}: full fine-tuning's best dev score came in the last epoch of its "
                         f"{full['budget']:.0f} (selected at epoch {full['selected']:.1f} on average), while "
                         + ", ".join(f"{m} had {b:.0f}" for m, b in longer["budget"].items())
                         + ": a method's lead over it there may be the budget as much as the method.")
    return lines


def task3_answers(comparisons: pd.DataFrame, costs: pd.DataFrame, memory: pd.DataFrame | None,
                  missing: pd.DataFrame, sizes: list[str] | None = None, budgets: list[str] | None = None) -> list[str]:
    """The answers to Task 3 in sentences: quality against full fine-tuning and the share trained
    (`task3_findings`), each method's cost (`describe_method_costs`), the runs that drop a class
    (`describe_collapse`, from `never_predicted`), the two-size comparison (`sizes`), the budgets' caveat
    (`budgets`, from `describe_budgets`) and what the seeds can decide."""
    n = int(comparisons["paired seeds"].max()) if len(comparisons) else 0
    return (task3_findings(comparisons, costs) + describe_method_costs(costs, memory) + describe_collapse(missing)
            + list(sizes or []) + list(budgets or []) + [what_seeds_decide(n)])


# --- sentences on the analysis tables ------------------------------------------------------------------------

def describe_selection(table: pd.DataFrame) -> list[str]:
    """Sentences from `selection_table`: where each method was selected and whether it used its budget."""
    lines = []
    for (dataset, label), r in table.iterrows():
        lines.append(f"{dataset}, {label}: selected at epoch {r['selected epoch']:.1f} on average (dev macro-F1 "
                     f"{r['dev macro-F1']:.3f}); trained {r['epochs trained']:.1f} of {r['epoch budget']:.0f} epochs "
                     f"({r['training min']:.1f} min), stopped early in {r['stopped early']} runs"
                     + ("; its best dev score came, on average, in the last epoch of its budget: a larger budget "
                        "may still help" if _in_last_epoch(r["selected epoch"], r["epoch budget"]) else "") + ".")
    return lines


def describe_curve_facts(facts: pd.DataFrame) -> list[str]:
    """Per (dataset, label), from `curve_facts`: how long its macro-F1 stayed at the majority-class level and
    whether it was still rising when training stopped, in words."""
    lines = []
    for (dataset, label), part in facts.groupby(["dataset", "label"]):
        n = len(part)
        flat = part["epochs at majority level"]
        never = int(part["never left majority level"].sum())
        gain = part["last-epoch gain"]
        rising = int((gain > 0).sum())
        level = f"the majority-class level ({part['majority level'].iloc[0]:.3f})"
        span = f"{flat.min():.1f}" if flat.min() == flat.max() else f"{flat.min():.1f}–{flat.max():.1f}"
        text = (f"{dataset}, {label}: test macro-F1 was above {level} from the first evaluation"
                if flat.max() == 0 else f"{dataset}, {label}: test macro-F1 stayed at {level} for {span} of "
                f"{part['epochs'].max():.1f} epochs trained")
        text += f", and never left it in {never} of {n} seeds" if never else ""
        text += (f"; over the last epoch it rose by {gain.mean():+.3f} on average (rising in {rising} of {n} "
                 f"seeds)" if gain.notna().any() else "")
        lines.append(text + ".")
    return lines


def describe_collapse(missing: pd.DataFrame) -> list[str]:
    """Sentences on runs that never predict some class (from `never_predicted`)."""
    lines = []
    for (dataset, label), r in missing.iterrows():
        if r["runs missing a class"]:
            text = (f"{dataset}, {label}: {r['runs missing a class']} of {r['runs']} runs never predict some "
                    f"class: {r['classes never predicted (seeds)']}")
            if r.get("runs predicting one class only", "none") != "none":
                text += f"; predicting a single class: {r['runs predicting one class only']}"
            lines.append(text + ".")
    return lines or ["Every run predicts every class at least once."]
