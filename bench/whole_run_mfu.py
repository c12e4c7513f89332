"""How close each side of a `--whole-run` comparison came to the machine's matmul peak while training, and so
how much faster any engine could train the same epoch on this machine.

    python bench/whole_run_mfu.py bench/results/<date>_whole_run_*.txt [...] [--out PATH]

For each results file (the JSON line `throughput.py --whole-run` ends with): the model FLOPs of one epoch of
the dataset's training split (every example once, as both sides train it; `measure.count_train_flops`, padding
not counted), each side's median training time, its achieved FLOP/s and MFU against the best matmul probe of
its precision at the run's thread count, taken now (run it on the machine, quiet, that made the file). The
ceiling is the other side's training time over the epoch's FLOPs at the peak: a training loop that ran every
FLOP at the peak could be at most that much faster than the other side.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import report as bench_report  # noqa: E402
from bench.measure import count_train_flops, matmul_peak  # noqa: E402
from bench.sides import labels_of  # noqa: E402
from bench.throughput import _commit  # noqa: E402


def epoch_flops(settings: dict, work: Path) -> tuple[float, int]:
    """Model FLOPs of one training epoch over the dataset's train split, and its example count."""
    from studykit.config import RunConfig
    from studykit.modeling import load_model_and_tokenizer
    from studykit.pipeline import tokenize_dataset
    config = RunConfig(settings["model"], settings["dataset"], max_length=settings["max_length"],
                       data_dir=settings["data_dir"], results_dir=str(work))
    model, tokenizer = load_model_and_tokenizer(config.model_name, len(labels_of(settings["dataset"])),
                                                config.cache_dir)
    lengths = list(tokenize_dataset(config, tokenizer)["train"]["length"])
    return count_train_flops(model, lengths), len(lengths)


def report(path: Path, work: Path) -> dict:
    import torch
    out = json.loads(path.read_text().strip().splitlines()[-1])
    settings = out["settings"]
    torch.set_num_threads(settings["threads"])
    flops, examples = epoch_flops(settings, work)
    rows, peaks = {}, {}
    for side, runs in out["runs"].items():
        precision = runs[0]["precision"]
        if precision not in peaks:
            peaks[precision] = max(matmul_peak(precision) for _ in range(3))
        train_s = statistics.median(r["train_time_s"] for r in runs)
        rows[side] = dict(precision=precision, train_s=train_s, achieved_gflops=flops / train_s / 1e9,
                          mfu=flops / train_s / peaks[precision], at_peak_s=flops / peaks[precision])
    other = out["other_side"]
    ceiling = rows[other]["train_s"] / rows["ours"]["at_peak_s"]
    print(f"{path.name}: {settings['model']} on {settings['dataset']}, {examples} training examples, "
          f"{flops / 1e12:.2f} TFLOP per epoch (model FLOPs); {settings['threads']} threads; {settings['machine']}")
    for side, r in rows.items():
        print(f"  {side:18s} {r['precision']:5s} train {r['train_s']:7.1f} s  {r['achieved_gflops']:6.1f} GFLOP/s"
              f"  MFU {100 * r['mfu']:5.1f} %  (the epoch at the {r['precision']} peak: {r['at_peak_s']:.1f} s)")
    print(f"  ceiling: an engine at 100 % MFU would train {ceiling:.2f}x as fast as {other} here "
          f"(measured: {rows[other]['train_s'] / rows['ours']['train_s']:.2f}x)")
    return dict(file=path.name, flops=flops, examples=examples, peaks=peaks, sides=rows, ceiling=ceiling)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--out", help="results file (default bench/results/<date>_whole_run_mfu_cpu.txt; '-' for none)")
    args = p.parse_args(argv)
    tee = bench_report.Tee(sys.stdout)
    sys.stdout = tee
    try:
        with tempfile.TemporaryDirectory(prefix="studykit-mfu-") as work:
            results = [report(path, Path(work)) for path in args.files]
        bench_report.json_line(results)
    finally:
        sys.stdout = tee.stream
    if args.out != "-":
        out = Path(args.out) if args.out else bench_report.default_out_path("whole_run_mfu_cpu")
        bench_report.write_results(out, bench_report.header(argv, _commit(), "bench/whole_run_mfu.py"),
                                   tee.copy.getvalue())
        print(f"written to {out}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
