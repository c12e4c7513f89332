"""What one training step costs per model, and what a study grid of it would cost: the measurement the
two-size study (MiniLM beside MPNet-base) is sized from.

    python bench/step_cost.py                                    # MiniLM and MPNet-base, fp32 and bf16, 2 threads
    python bench/step_cost.py --models all-mpnet-base-v2 --precisions fp32 --threads 1 2
    STUDYKIT_CPU_BF16=0 python bench/step_cost.py                # as on a CPU without native bf16 (see below)

For each model x precision x thread count: the median of `--repeats` timed optimizer steps (forward, backward,
AdamW; after two warm-up steps) of full fine-tuning at batch x length (default 32 x 48 tokens, about restaurant's
mean length padded per batch), model FLOPs per step (bench/measure.py) and MFU against the best n x n matmul of
that precision at that thread count. bf16 is autocast, as our trainer runs it; STUDYKIT_CPU_BF16 changes only
what "auto" resolves to, not the kernels, so an emulated-bf16 figure needs a CPU without AVX-512 BF16/AMX.
Prints one line per measurement and a JSON line at the end; `--out FILE` writes the whole output there.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench.measure import count_train_flops, matmul_peak  # noqa: E402
from studykit.hardware import cpu_name, cpu_supports_bf16  # noqa: E402


def step_seconds(model, batch_size: int, length: int, precision: str, repeats: int) -> list[float]:
    """Seconds of `repeats` full fine-tuning steps on random tokens (after two warm-up steps)."""
    import torch
    inputs = dict(input_ids=torch.randint(1000, 2000, (batch_size, length)),
                  attention_mask=torch.ones(batch_size, length, dtype=torch.long),
                  labels=torch.randint(0, model.config.num_labels, (batch_size,)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    model.train()
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["all-minilm-l6-v2", "all-mpnet-base-v2"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--threads", nargs="+", type=int, default=[2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import torch
    from studykit.modeling import load_model_and_tokenizer

    out = io.StringIO()

    def say(text):
        print(text, flush=True)
        out.write(text + "\n")

    say(f"CPU: {cpu_name()}; native bf16: {cpu_supports_bf16()}; torch {torch.__version__}; "
        f"batch {args.batch_size} x {args.length} tokens; median of {args.repeats} steps after 2 warm-up steps")
    rows = []
    for name in args.models:
        with contextlib.redirect_stderr(io.StringIO()):
            model, _ = load_model_and_tokenizer(name, 3, ROOT / "results" / ".cache")
        flops = count_train_flops(model, [args.length] * args.batch_size)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for precision in args.precisions:
                peak = matmul_peak(precision)
                times = step_seconds(model, args.batch_size, args.length, precision, args.repeats)
                seconds = statistics.median(times)
                row = dict(model=name, params=sum(p.numel() for p in model.parameters()), threads=threads,
                           precision=precision, step_s=round(seconds, 3), step_s_min=round(min(times), 3),
                           tflop_per_step=round(flops / 1e12, 4), achieved_gflops=round(flops / seconds / 1e9, 1),
                           matmul_peak_gflops=round(peak / 1e9, 1), mfu=round(flops / seconds / peak, 3))
                rows.append(row)
                say(f"{name:20s} {threads} thr {precision}: {seconds:.3f} s/step (min {min(times):.3f}), "
                    f"{row['achieved_gflops']} GFLOP/s of a {row['matmul_peak_gflops']} GFLOP/s matmul peak: "
                    f"MFU {row['mfu']:.2f}")
    base = {(r["threads"], r["precision"]): r["step_s"] for r in rows if r["model"] == args.models[0]}
    for r in rows[len(args.precisions) * len(args.threads):]:
        ref = base.get((r["threads"], r["precision"]))
        if ref:
            say(f"{r['model']} / {args.models[0]}, {r['threads']} thr {r['precision']}: {r['step_s'] / ref:.1f}x per step")
    say(json.dumps(rows))
    if args.out:
        Path(args.out).write_text(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
