"""What runs cost in memory: the runs' own GPU peaks, or one measured training step for CPU runs.

Kept apart from `results` so that reading results never runs a training step.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from transformers import AutoConfig

from .data import DATASETS
from .memory import measure_memory
from .modeling import resolve_model

__all__ = ["training_memory"]


def training_memory(results: pd.DataFrame, seq_len_by_dataset: dict) -> pd.DataFrame:
    """Peak training memory per (dataset, method).

    GPU runs: the runs' own `torch.cuda.max_memory_allocated`. CPU runs: one measured training step of the
    same model, per-device batch and the dataset's typical length (`seq_len_by_dataset`), counting bytes of
    parameters, gradients, optimizer state and the activations autograd saves (`measure_memory`).
    """
    rows = []
    for (dataset, method), part in results.groupby(["dataset", "method"]):
        run = part.iloc[0]
        if str(run.get("peak_memory_kind", "")).startswith("cuda"):
            rows.append({"dataset": dataset, "method": method, "total": part["peak_memory_bytes"].mean(),
                         "source": "cuda max allocated (runs)"})
            continue
        config = AutoConfig.from_pretrained(resolve_model(run["model_name"], Path(run["results_dir"]) / ".cache"))
        config.num_labels = len(DATASETS[dataset.rsplit("_", 1)[0]].labels)
        batch = int(run["batch_size"] // run["gradient_accumulation"] // run["num_processes"])
        # the method from the run's config columns (None became NaN when frames were concatenated)
        kind = run.get("training_method", "adapter" if pd.notna(run["adapter_size"]) else "full")
        extra = {"adapter_size": int(run["adapter_size"])} if kind == "adapter" else {}
        if kind == "lora":
            extra = {"lora_rank": int(run["lora_rank"]), "lora_targets": ["query", "value"]}
        measured = measure_memory(config, batch_size=batch, seq_len=int(seq_len_by_dataset[dataset]),
                                  peft=None if kind == "full" else kind, attn_implementation="sdpa", **extra)
        rows.append({"dataset": dataset, "method": method, **measured,
                     "source": f"measured step, batch {batch}, {int(seq_len_by_dataset[dataset])} tokens (CPU)"})
    return pd.DataFrame(rows).set_index(["dataset", "method"])
