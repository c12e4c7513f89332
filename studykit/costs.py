"""What runs and methods cost: time per epoch, checkpoint and trainable share per method, training-step
memory (the runs' own GPU peaks, or one measured training step for CPU runs), and where an adapter model's
trainable share comes from.

Kept apart from `results` so that reading results never builds a model or runs a training step.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification

from .adapters import add_adapters, count_parameters
from .data import DATASETS
from .memory import default_attention, measure_memory, model_config
from .methods import method_named

__all__ = ["training_memory", "time_per_epoch", "describe_time_per_epoch", "method_costs", "describe_model_costs",
           "adapter_share", "describe_adapter_shares"]


def training_memory(results: pd.DataFrame, seq_len_by_dataset: dict) -> pd.DataFrame:
    """Peak training memory per (dataset, label).

    GPU runs: the runs' own `torch.cuda.max_memory_allocated`. CPU runs: one measured training step of the
    same model, per-device batch and the dataset's typical length (`seq_len_by_dataset`), counting bytes of
    parameters, gradients, optimizer state and the activations autograd saves (`measure_memory`).
    """
    rows = []
    for (dataset, label), part in results.groupby(["dataset", "label"]):
        run = part.iloc[0]
        if str(run.get("peak_memory_kind", "")).startswith("cuda"):
            rows.append({"dataset": dataset, "label": label, "total": part["peak_memory_bytes"].mean(),
                         "source": "cuda max allocated (runs)"})
            continue
        config = model_config(run["model_name"], Path(run["results_dir"]) / ".cache")  # shipped: no model files
        config.num_labels = len(DATASETS[dataset.rsplit("_", 1)[0]].labels)
        batch = int(run["batch_size"] // run["gradient_accumulation"] // run["num_processes"])
        # the method object the engine applied, from what the run recorded (studykit.results.recorded_method)
        settings = {k: run[k] for k in ("adapter_size", "adapter_train_layer_norm", "lora_rank", "lora_alpha")
                    if k in run and pd.notna(run[k])}
        method = method_named(run["training_method"], **{k: v if isinstance(v, bool) else int(v)
                                                         for k, v in settings.items()})
        measured = measure_memory(config, batch_size=batch, seq_len=int(seq_len_by_dataset[dataset]), method=method,
                                  attn_implementation=default_attention(config))
        rows.append({"dataset": dataset, "label": label, **measured,
                     "source": f"measured step, batch {batch}, {int(seq_len_by_dataset[dataset])} tokens (CPU)"})
    return pd.DataFrame(rows).set_index(["dataset", "label"])


def time_per_epoch(results: pd.DataFrame) -> pd.DataFrame:
    """Seconds per epoch with and without the evaluations run during training, median per (dataset, label).

    The median over seeds, not the mean: runs share a CPU with whatever else the machine does, and one run
    slowed by other load (or paused) would pull a mean of 3-5 seeds up by its whole delay. Per epoch of training
    done: a run that selection on dev stopped mid-epoch counts that epoch's fraction (`epochs_trained`; older runs
    without it trained whole epochs, `epochs_run`)."""
    epochs = results["epochs_trained"] if "epochs_trained" in results else results["epochs_run"]
    epochs = epochs.fillna(results["epochs_run"])
    frame = results.assign(**{"s/epoch, training only": results["train_time_s"] / epochs,
                              "s/epoch incl. evaluations": results["time_per_epoch_s"] * results["epochs_run"] / epochs})
    cols = ["s/epoch, training only", "s/epoch incl. evaluations", "train_samples_per_s"]
    return frame.groupby(["dataset", "label"])[cols].median().rename(
        columns={"train_samples_per_s": "training examples/s"})


def describe_time_per_epoch(table: pd.DataFrame) -> list[str]:
    """Sentences from `time_per_epoch`: the seconds per epoch with and without the test evaluations."""
    lines = []
    for (dataset, label), r in table.iterrows():
        train, total = r["s/epoch, training only"], r["s/epoch incl. evaluations"]
        lines.append(f"{dataset}, {label}: {train:.3g} s per epoch of training, {total:.3g} s with the test "
                     f"evaluations ({total / train - 1:+.0%}); {r['training examples/s']:.3g} training examples/s.")
    return lines


def method_costs(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, label): the model and method, trainable and total parameters, the share trained, the
    checkpoint (adapter and LoRA runs: the saved file; full fine-tuning: the bytes of all trained weights) and
    the time per epoch (`time_per_epoch`)."""
    cost = results.groupby(["dataset", "label"]).agg(
        model_name=("model_name", "first"), training_method=("training_method", "first"),
        trainable_params=("trainable_params", "first"), total_params=("total_params", "first"),
        checkpoint_MB=("checkpoint_bytes", lambda b: b.mean() / 1e6))
    cost.insert(4, "trainable %", 100 * cost.trainable_params / cost.total_params)
    return cost.join(time_per_epoch(results))


def describe_model_costs(results: pd.DataFrame, step_memory: pd.DataFrame | None = None) -> list[str]:
    """What a larger model costs, per dataset and pair of fully fine-tuned models (smaller first): parameters,
    seconds per training epoch, checkpoint, the training step's peak (`step_memory`, from `training_memory`, when
    given) and process peak RSS (the whole process, from the runs' summaries)."""
    full = results[results["training_method"] == "full"] if len(results) else results
    lines = []
    for dataset, part in full.groupby("dataset") if len(full) else []:
        cost = method_costs(part).droplevel("dataset").join(
            part.groupby("label")["peak_memory_bytes"].mean().rename("rss"))
        if step_memory is not None:
            cost = cost.join(step_memory.loc[dataset, ["total", "source"]].rename(columns={"total": "step"}))
        cost = cost.sort_values(["total_params", "model_name"])
        for (_, a), (_, b) in zip(cost.iloc[:-1].iterrows(), cost.iloc[1:].iterrows()):
            if a["model_name"] == b["model_name"]:
                continue
            step = (f"training step peak {b['step'] / 1e9:.2f} vs {a['step'] / 1e9:.2f} GB "
                    f"({b['step'] / a['step']:.1f}x; {b['source']}); " if step_memory is not None else "")
            lines.append(
                f"{dataset}, {b['model_name']} vs {a['model_name']} (full fine-tuning): {b['total_params']:,.0f} vs "
                f"{a['total_params']:,.0f} parameters; {b['s/epoch, training only']:.3g} vs "
                f"{a['s/epoch, training only']:.3g} s per training epoch "
                f"({b['s/epoch, training only'] / a['s/epoch, training only']:.1f}x); checkpoint {b['checkpoint_MB']:.0f} vs "
                f"{a['checkpoint_MB']:.0f} MB; {step}process peak RSS {b['rss'] / 1e9:.2f} vs {a['rss'] / 1e9:.2f} GB.")
    return lines


def adapter_share(model_config, adapter_size: int, num_labels: int) -> dict:
    """Where an adapter model's trainable share comes from, counted on the architecture built on the meta
    device (no weights): layers L, width d, adapter, LayerNorm, head and embedding parameters, and the
    percentage trained. The share grows with m/d (adapters ~4·m·d per layer against ~12·d² for the layer),
    shrinks with the embedding table, and includes the classification head (RoBERTa's has a d×d dense layer,
    BERT's is one linear layer on the frozen pooler)."""
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


def describe_adapter_shares(share: pd.DataFrame) -> list[str]:
    """Sentences from a table of `adapter_share` rows (index: model names, the full profile's first): each
    model's trained share beside the first's, and why the shares differ (width, embedding table, head)."""
    first, rest = share.index[0], list(share.index[1:])
    row = share.loc[first]
    lines = [f"With m = {row['bottleneck m']:.0f}, {first} trains {row['trainable %']:.2f} % of its weights (L = "
             f"{row['layers L']:.0f}, d = {row['width d']:.0f}, embeddings {row['embedding share of total %']:.0f} % of "
             f"the weights, head {row['head params']:,.0f} parameters)."]
    for name in rest:
        r = share.loc[name]
        lines.append(f"{name} trains {r['trainable %']:.2f} % (L = {r['layers L']:.0f}, d = {r['width d']:.0f}, "
                     f"embeddings {r['embedding share of total %']:.0f} %, head {r['head params']:,.0f} parameters).")
    lines.append("Adapters grow with L·m·d and a layer with L·d², so a narrower model gets a larger share from the same m; "
                 "a larger embedding table pulls the share back, and a head with its own d×d dense layer (RoBERTa's, "
                 "MPNet's) trains too, while BERT's head is one linear layer on the frozen pooler.")
    return lines
