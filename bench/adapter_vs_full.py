"""Adapters vs full fine-tuning of the real all-MiniLM-L6-v2 on the real restaurant data, same budget (CPU).

    python bench/adapter_vs_full.py [--steps 300] [--seeds 1] [--data-dir ../shared/data]

Prints macro-F1, accuracy, trainable parameters, train samples/s and the measured training memory
(parameters + gradients + optimizer state + saved activations, one step) for both, then one JSON line.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import utils  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--full-lr", type=float, default=5e-5)
    parser.add_argument("--adapter-lr", type=float, default=1e-3)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    parser.add_argument("--results-dir", default="results/bench")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = dict(model_name="all-minilm-l6-v2", dataset="restaurant_sup", epochs=50, max_steps=args.steps,
                  batch_size=args.batch_size, max_length=128, data_dir=args.data_dir,
                  results_dir=args.results_dir, task="bench", evals_per_epoch=1, save_adapter=False)
    rows = {}
    for label, extra in (("full", dict(learning_rate=args.full_lr)),
                         ("adapter64", dict(learning_rate=args.adapter_lr, adapter_size=64))):
        runs = [utils.train_run(utils.RunConfig(seed=s, **common, **extra)) for s in args.seeds]
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(utils.resolve_model("all-minilm-l6-v2", None))
        config.num_labels = 3
        memory = utils.measure_memory(config, batch_size=args.batch_size, seq_len=32,
                                      peft="adapter" if "adapter" in label else None, attn_implementation="sdpa")
        rows[label] = {
            "f1_macro": sum(r["f1_macro"] for r in runs) / len(runs),
            "accuracy": sum(r["accuracy"] for r in runs) / len(runs),
            "trainable_params": runs[0]["trainable_params"], "total_params": runs[0]["total_params"],
            "train_samples_per_s": sum(r["train_samples_per_s"] for r in runs) / len(runs),
            "measured_train_memory_MB": memory["total"] / 1e6,
            "activations_MB": memory["activations"] / 1e6,
        }
    print(f"all-MiniLM-L6-v2, restaurant (real data), {args.steps} steps x batch {args.batch_size}, "
          f"seeds {args.seeds}, {args.threads} CPU threads")
    for label, row in rows.items():
        print(f"{label:10s} " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
