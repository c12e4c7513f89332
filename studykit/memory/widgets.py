"""Presentation: tables, figures, the explorer widgets (static output when no front end is attached)."""
from __future__ import annotations

import io
import os

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Image, display

from ..progress import has_live_frontend
from .catalog import COMPONENTS, GB, GPUS, MODEL_CONFIGS, OPTIMIZERS, SCHEMES
from .estimate import assumptions_with, estimate_memory

__all__ = ["format_bytes", "gpus_that_fit", "breakdown_table", "plot_memory_breakdown", "memory_summary",
           "memory_explorer", "gpu_label", "report_walk", "plot_report_walk"]


def format_bytes(n):
    """Bytes in GB (10^9 bytes), the unit of every table and figure here."""
    return f"{n / GB:,.2f} GB"


def gpu_label(name, capacity):
    """A card's name with its capacity in GB: cards are sold in GiB ("24 GB" holds 25.8 GB)."""
    return f"{name.split(' (')[0].replace(' GB', ' GiB')} card = {capacity / GB:.1f} GB"


def _draw_gpu_lines(ax, top, gpus=None, x=0.0):
    """Dashed lines for the cards up to the first that holds `top` (so that one is always drawn)."""
    drawn_top = top
    for name, cap in sorted((gpus or GPUS).items(), key=lambda kv: kv[1]):
        ax.axhline(cap / GB, color="grey", ls="--", lw=0.8, zorder=0)
        ax.text(1.01, cap / GB, gpu_label(name, cap).replace(" card = ", " card\n= "), transform=ax.get_yaxis_transform(),
                va="center", ha="left", fontsize=7.5, color="dimgrey", clip_on=False)
        drawn_top = max(drawn_top, cap / GB)
        if cap / GB >= top:
            break
    return drawn_top


def gpus_that_fit(total_bytes, gpus=None):
    """Names of the GPUs (from `GPUS`) whose memory holds `total_bytes`."""
    return [name for name, cap in (gpus or GPUS).items() if total_bytes <= cap]


def breakdown_table(breakdowns):
    """GB per component (rows) for each labelled breakdown (columns)."""
    return pd.DataFrame({label: {k: b[k] / GB for k in (*COMPONENTS, "total")}
                         for label, b in breakdowns.items()}).round(2)


COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer_state": "#c44e52",
          "master_weights": "#8172b3", "activations": "#55a868", "temporaries": "#64b5cd", "overhead": "#937860"}


def plot_memory_breakdown(breakdowns, gpus=None, title=None, ax=None, save_to=None):
    """Stacked bars, one per labelled breakdown, with the GPU sizes as dashed lines."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8.2, 4.6))
    labels = list(breakdowns)
    bottom = [0.0] * len(labels)
    for comp in COMPONENTS:
        vals = [breakdowns[l][comp] / GB for l in labels]
        ax.bar(labels, vals, bottom=bottom, color=COLORS[comp], label=comp.replace("_", " "), width=0.55, zorder=2)
        bottom = [b + v for b, v in zip(bottom, vals)]
    top = max(bottom) if bottom else 1
    top = _draw_gpu_lines(ax, top, gpus, x=len(labels) - 0.5)
    for i, b in enumerate(bottom):
        ax.text(i, b, f"{b:.2f} GB", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("GB per GPU (1 GB = 10⁹ bytes)")
    ax.set_ylim(0, 1.12 * top)
    ax.set_title(title or "Training memory per GPU", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(COMPONENTS),
              frameon=False)  # below the axes: clear of the bars; the cards are labelled on the right
    fig.tight_layout()
    if save_to:
        os.makedirs(os.path.dirname(str(save_to)) or ".", exist_ok=True)
        fig.savefig(save_to, dpi=110)
    return fig


def _peft_assumptions(method, size):
    if method == "lora":
        return dict(peft="lora", lora_rank=int(size))
    if method == "adapter":
        return dict(peft="adapter", adapter_size=int(size))
    raise ValueError(f"unknown PEFT method {method!r}: lora or adapter")


def memory_summary(model, peft_method="lora", peft_size=16, **assumptions):
    """Full and PEFT breakdowns for the same assumptions, and a one-paragraph text saying what fits."""
    full = estimate_memory(model, **assumptions)
    peft = estimate_memory(model, **_peft_assumptions(peft_method, peft_size), **assumptions)
    what = {"lora": f"LoRA r={peft_size}", "adapter": f"adapters adapter_size={peft_size}"}[peft_method]
    saving = 1 - peft["total"] / full["total"]

    def fits(b):
        names = gpus_that_fit(b["total"])
        return ", ".join(names) if names else "none of the listed GPUs"
    text = (f"Full fine-tuning: {format_bytes(full['total'])} per GPU at its peak ({full['peak_phase']}), fits: "
            f"{fits(full)}. PEFT ({what}): {format_bytes(peft['total'])} ({peft['peak_phase']}), fits: {fits(peft)}. "
            f"Saving: {format_bytes(full['total'] - peft['total'])} ({100 * saving:.0f} %).")
    return {"Full fine-tuning": full, f"PEFT ({what})": peft}, text


class MemoryExplorer:
    """The explorer: `.controls` (name -> widget), `.summary` (HTML widget), `.refresh()`, `.figure`.

    With a front end it displays as the live widget box; without one it displays static output (the
    summary and the figure for the current values), so a headless run has nothing to wait for.
    """

    def __init__(self, controls, summary, box, refresh, live):
        self.controls, self.summary, self.box, self.refresh, self.live = controls, summary, box, refresh, live
        self.figure = None

    def _ipython_display_(self):
        if self.live:
            display(self.box)
            return
        values = ", ".join(f"{k}={w.value}" for k, w in self.controls.items())
        display(HTML(f"<p><i>Static view (no widget front end): {values}. Open the notebook in Jupyter "
                     f"to move the controls.</i></p>{self.summary.value}"))
        if self.figure is not None:  # as a PNG: the same in every kernel, backend and static export
            png = io.BytesIO()
            self.figure.savefig(png, format="png", dpi=100)
            display(Image(data=png.getvalue(), format="png"))


def memory_explorer(model="llama-3.2-3b", peft_method="lora", peft_size=16, live=None, **assumptions):
    """Widgets: every assumption as a control, a stacked bar chart (full vs PEFT) and a fit line.

    live: None detects the front end (`studykit.progress.has_live_frontend`); True/False force it. Returns a
    `MemoryExplorer` (see there).
    """
    live = has_live_frontend() if live is None else live
    o = assumptions_with(None, assumptions)
    names = list(dict.fromkeys([*MODEL_CONFIGS, model]))
    style, wide = {"description_width": "110px"}, W.Layout(width="330px")
    c = dict(
        model=W.Dropdown(options=names, value=model, description="model", style=style, layout=wide),
        scheme=W.Dropdown(options=list(SCHEMES), value=o["scheme"], description="precision scheme",
                          style=style, layout=wide),
        optimizer=W.Dropdown(options=list(OPTIMIZERS), value=o["optimizer"], description="optimizer",
                             style=style, layout=wide),
        batch_size=W.Dropdown(options=sorted({1, 2, 4, 8, 16, 32, 64, o["batch_size"]}), value=o["batch_size"],
                              description="batch size",
                              style=style, layout=wide),
        seq_len=W.Dropdown(options=sorted({128, 256, 512, 1024, 2048, 4096, 8192, o["seq_len"]}), value=o["seq_len"],
                           description="sequence length", style=style, layout=wide),
        checkpointing=W.Checkbox(value=o["checkpointing"], description="activation checkpointing", indent=False),
        memory_efficient_attention=W.Checkbox(value=o["memory_efficient_attention"],
                                              description="memory-efficient attention", indent=False),
        peft_method=W.Dropdown(options=[("LoRA (rank)", "lora"), ("adapters (bottleneck)", "adapter")],
                               value=peft_method,
                               description="PEFT method", style=style, layout=wide),
        peft_size=W.Dropdown(options=[1, 2, 4, 8, 16, 32, 64, 128, 256], value=peft_size,
                             description="PEFT size", style=style, layout=wide),
        zero_stage=W.Dropdown(options=[0, 1, 2, 3], value=o["zero_stage"], description="ZeRO stage",
                              style=style, layout=wide),
        num_gpus=W.Dropdown(options=[1, 2, 4, 8, 16, 64], value=o["num_gpus"], description="GPUs",
                            style=style, layout=wide),
    )
    summary = W.HTML()
    summary.add_class("memory-summary")
    plot = W.Output() if live else None
    keys = list(c)
    box = W.VBox([W.HBox([W.VBox([c[k] for k in keys[:6]]), W.VBox([c[k] for k in keys[6:]])]), summary]
                 + ([plot] if live else []))
    explorer = MemoryExplorer(c, summary, box, None, live)

    def refresh(*_):
        v = {k: w.value for k, w in c.items()}
        size = v.pop("peft_size")
        size = max(1, int(size))
        try:
            breakdowns, text = memory_summary(v.pop("model"), v.pop("peft_method"), size, **v)
        except (ValueError, TypeError) as e:
            summary.value = f"<b>Cannot estimate:</b> {e}"
            return
        summary.value = f"<div style='max-width:760px'>{text}</div>"
        fig = plot_memory_breakdown(breakdowns, title=f"estimate_memory (step peak): {c['model'].value}, {c['scheme'].value}, "
                                    f"{c['optimizer'].value}, batch {c['batch_size'].value} x "
                                    f"{c['seq_len'].value} tokens")
        plt.close(fig)
        explorer.figure = fig
        if live:  # a front end shows the Output widget; headless, nothing is captured into it
            with plot:
                plot.clear_output(wait=True)
                display(fig)

    for w in c.values():
        w.observe(refresh, names="value")
    explorer.refresh = box.refresh = refresh
    box.controls, box.summary = c, summary
    refresh()
    return explorer


def report_walk(model="llama-3.2-3b", scheme="autocast", batch_size=4, seq_len=512, peft=None, **assumptions):
    """From the report's figure to ours, one cause at a time: [(step, total bytes, what changed)].

    Full fine-tuning starts from the report's 30 GB, PEFT (peft="lora"/"adapter" with its size
    keywords) from its 12.12 GB; then the real parameter count, the scheme's bytes per parameter,
    the activations of the real layers at batch x sequence length with every component counted as if
    alive at once (the per-component sum), the step's timeline (components come and go: the peak), and
    the GPU overhead.
    """
    method = dict(peft=peft, **{k: assumptions.pop(k) for k in ("lora_rank", "lora_targets", "adapter_size")
                                if k in assumptions}) if peft else {}
    start = estimate_memory(3e9, preset="report", **(dict(peft_fraction=0.005) if peft else {}))
    real_n = estimate_memory(model, preset="report", **method)
    per_param = estimate_memory(model, scheme=scheme, activations=real_n["activations"], overhead=False,
                                **method, **assumptions)
    peak = estimate_memory(model, scheme=scheme, batch_size=batch_size, seq_len=seq_len, overhead=False,
                           **method, **assumptions)
    ours = estimate_memory(model, scheme=scheme, batch_size=batch_size, seq_len=seq_len, **method, **assumptions)
    n = real_n["weights"] / 2
    return [("report", start["total"], "3e9 parameters x (2 + 2 + 4) B, activations = weights"),
            ("real parameter count", real_n["total"], f"{model}: {n / 1e9:.2f}B parameters"),
            (f"{scheme} bytes/param", per_param["total"], SCHEMES[scheme]["label"]),
            (f"activations {batch_size}x{seq_len}, summed", peak["sum_of_components"],
             "every component at its end-of-phase size, as if alive at once (no temporaries)"),
            (f"step peak ({peak['peak_phase']})", peak["total"], "live bytes over forward, backward, optimizer step"),
            ("+ GPU overhead = ours", ours["total"], "CUDA context 0.5 GB + 10 % allocator")]


def plot_report_walk(walks, gpus=None, save_to=None):
    """Waterfalls, one panel per walk ({title: report_walk(...)}), with the cards drawn in GB."""
    fig, axes = plt.subplots(1, len(walks), figsize=(5.2 * len(walks), 4.4), squeeze=False)
    top_all = max(max(t for _, t, _ in w) for w in walks.values()) / GB
    for ax, (title, walk) in zip(axes[0], walks.items()):
        prev = 0.0
        for i, (step, total, _) in enumerate(walk):
            t = total / GB
            if i in (0, len(walk) - 1):  # the report's bar and ours: full height
                ax.bar(i, t, color="#c44e52" if i == 0 else "#4c72b0", width=0.6, zorder=2)
            else:
                ax.bar(i, t - prev, bottom=prev, color="#55a868" if t >= prev else "#dd8452", width=0.6, zorder=2)
            ax.text(i, max(t, prev), f"{t:.2f}" if i == 0 else f"{t:.1f}", ha="center", va="bottom", fontsize=8)
            prev = t
        top = _draw_gpu_lines(ax, top_all, gpus, x=len(walk) - 0.5)
        ax.set_xticks(range(len(walk)), [s for s, _, _ in walk], rotation=25, ha="right", fontsize=8)
        ax.set_ylim(0, 1.1 * top)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("GB per GPU (1 GB = 10⁹ bytes)")
    fig.tight_layout()
    if save_to:
        os.makedirs(os.path.dirname(str(save_to)) or ".", exist_ok=True)
        fig.savefig(save_to, dpi=110)
    return fig
