"""Figures: learning curves and confusion matrices, one colour per training method in every notebook, metric
names in words, a legend on every panel."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .results import metric_name

__all__ = ["METHOD_COLOURS", "method_colours", "model_line_styles", "plot_curves", "plot_confusions"]

# One colour family per training method, the same in every notebook; several labels of one method (models,
# learning rates) get shades of it.
METHOD_COLOURS = {"full": "Blues", "adapter": "Oranges", "lora": "Greens"}


def method_colours(labels_by_method: dict) -> dict:
    """{label: colour} from {label: training_method}: the method's colour family, one shade per label."""
    colours = {}
    for method in sorted(set(labels_by_method.values())):
        labels = sorted(label for label, m in labels_by_method.items() if m == method)
        cmap = plt.get_cmap(METHOD_COLOURS.get(method, "Greys"))
        shades = [0.7] if len(labels) == 1 else np.linspace(0.9, 0.5, len(labels))
        colours.update({label: cmap(shade) for label, shade in zip(labels, shades)})
    return colours


# Several models in one figure (the reference profile's two sizes): colour still says the method, and the line
# style says the model, so "which size" never rests on telling two shades apart.
_LINE_STYLES = ["-", "--", ":", "-."]


def model_line_styles(models) -> dict:
    """{model: matplotlib line style}: solid for the first model by name, then dashed, dotted, dash-dot."""
    return {m: _LINE_STYLES[i % len(_LINE_STYLES)] for i, m in enumerate(sorted(set(models)))}


def _save(fig, save_to):
    if save_to:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120)


_SPLIT_NAMES = {"test": "Test", "dev": "Dev", "train": "Training"}


def plot_curves(metrics: pd.DataFrame, metric: str = "f1_macro", split: str = "test", save_to=None,
                title: str | None = None, levels: dict | None = None):
    """One panel per dataset: `metric` against epoch, one line per label (coloured by its training method),
    mean ± std band over seeds; `levels` ({dataset: value}) draws the majority-class level."""
    data = metrics[metrics["split"] == split].dropna(subset=[metric])
    datasets = sorted(data["dataset"].unique())
    colours = method_colours(data.groupby("label")["training_method"].first().to_dict())
    models = data.groupby("label")["model_name"].first() if "model_name" in data else pd.Series(dtype=object)
    styles = model_line_styles(models) if models.nunique() > 1 else {}
    name = f"{_SPLIT_NAMES.get(split, split)} {metric_name(metric)}" if metric != "loss" \
        else metric_name(metric).capitalize()
    # a panel with more than four lines gets its legend below it (inside, it would cover the curves), and the
    # figure the height that legend takes
    entries = max((data.loc[data["dataset"] == d, "label"].nunique() + bool(levels and d in levels) for d in datasets),
                  default=0)
    below = entries > 4
    fig, axes = plt.subplots(1, max(len(datasets), 1), squeeze=False,
                             figsize=(4.6 * max(len(datasets), 1), 3.6 + (0.16 * entries + 0.3 if below else 0)))
    for ax, dataset in zip(axes[0], datasets):
        for label, part in data[data["dataset"] == dataset].groupby("label"):
            curve = part.groupby("step").agg(epoch=("epoch", "mean"), mean=(metric, "mean"),
                                             std=(metric, "std"), n=(metric, "size"))
            std = curve["std"].fillna(0)
            ax.plot(curve["epoch"], curve["mean"], color=colours[label], linestyle=styles.get(models.get(label), "-"),
                    label=f"{label} ({part['seed'].nunique()} seeds)")
            ax.fill_between(curve["epoch"], curve["mean"] - std, curve["mean"] + std, color=colours[label],
                            alpha=0.2)
        if levels and dataset in levels:
            ax.axhline(levels[dataset], color="grey", linestyle="--", linewidth=1, label="majority-class level")
        ax.set(title=f"{name} — {dataset}", xlabel="epoch", ylabel=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, **(dict(loc="upper center", bbox_to_anchor=(0.5, -0.2)) if below else dict(loc="best")))
    fig.suptitle(title or f"{name}, mean ± std over seeds")
    fig.tight_layout()
    _save(fig, save_to)
    return fig


def plot_confusions(matrices: dict, save_to=None):
    """Confusion matrices (from `confusion_matrices`), one column per dataset and one row per label; cells
    coloured by the share of each gold class (row), annotated with the mean count over seeds."""
    datasets = sorted({d for d, _ in matrices})
    methods = sorted({m for _, m in matrices})  # the runs' labels
    fig, axes = plt.subplots(len(methods), len(datasets), squeeze=False,
                             figsize=(4.2 * len(datasets), 3.9 * len(methods)))
    for j, dataset in enumerate(datasets):
        for i, method in enumerate(methods):
            ax = axes[i][j]
            if (dataset, method) not in matrices:
                ax.axis("off")
                continue
            counts = matrices[(dataset, method)]
            share = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)
            ax.imshow(share.to_numpy(), cmap="Greys", vmin=0, vmax=1)
            for (r, c), value in np.ndenumerate(counts.to_numpy()):
                ax.text(c, r, f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}", ha="center",
                        va="center", fontsize=7, color="white" if share.iat[r, c] > 0.5 else "black")
            ax.set_xticks(range(len(counts.columns)), counts.columns, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(counts.index)), counts.index, fontsize=7)
            ax.set(xlabel="predicted", ylabel="gold",
                   title=f"{dataset}\n{method} (mean of {counts.attrs.get('seeds', '?')} seeds)")
            ax.title.set_fontsize(8)
    fig.suptitle("Test confusion matrices: mean count over seeds, shade = share of the gold class")
    fig.tight_layout()
    _save(fig, save_to)
    return fig
