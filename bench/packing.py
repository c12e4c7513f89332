"""Grid throughput on CPU: the same short runs packed as 1 worker x C threads, C/2 x 2, ..., C x 1 thread.

    python bench/packing.py                       # 4 short MiniLM runs on real restaurant data, bf16 and fp32
    python bench/packing.py --quick               # tiny model on the test fixtures (smoke test)

Every layout runs the same fresh grid through `studykit.sweep.run_sweep` (train + final test evaluation, start-up
and data preparation included) in a new results folder. Layouts and precisions alternate, and their order is
reversed on every other repeat, so load from other jobs falls on all of them alike; the 1-minute load average
is recorded before and after each grid. Writes bench/results/<date>_packing_cpu.txt and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import report  # noqa: E402
from bench.throughput import FIXTURE_DATA, REAL_DATA, _commit  # noqa: E402


def layouts(cores: int) -> list[tuple[int, int]]:
    """(workers, threads each) for every power-of-two split of `cores`: 1 x C, 2 x C/2, ..., C x 1."""
    out, workers = [], 1
    while workers <= cores:
        if cores % workers == 0:
            out.append((workers, cores // workers))
        workers *= 2
    return out


def grid_configs(s: dict, results_dir: Path, precision: str):
    from studykit.config import RunConfig
    return [RunConfig(s["model"], s["dataset"], seed=seed, epochs=1, batch_size=32, learning_rate=5e-5,
                      max_length=128, max_steps=s["max_steps"], evals_per_epoch=1, precision=precision,
                      data_dir=s["data_dir"], results_dir=str(results_dir)) for seed in range(1, s["runs"] + 1)]


def time_grid(s: dict, work: Path, precision: str, workers: int, threads: int, tag: str) -> dict:
    from studykit.sweep import run_sweep
    configs = grid_configs(s, work / tag, precision)
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    frame = run_sweep(configs, devices=["cpu"], workers=workers, threads_per_worker=threads)
    wall = time.perf_counter() - t
    if not (frame["status"] == "finished").all():
        raise RuntimeError(f"grid {tag} did not finish: {frame[['status', 'error']].to_dict('records')}")
    return {"precision": precision, "workers": workers, "threads": threads, "wall_s": wall,
            "runs_per_min": len(configs) / wall * 60, "load_before": load_before, "load_after": os.getloadavg()[0],
            "f1_macro": list(frame["f1_macro"]), "eval_loss": list(frame["eval_loss"]),
            "recorded_precision": sorted(set(frame["precision"]))}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model on the test fixtures, one repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--runs", type=int, default=4, help="runs per grid (seeds 1..runs)")
    p.add_argument("--max-steps", type=int, default=20, help="optimizer steps per run (batch 32)")
    p.add_argument("--train-examples", type=int, default=0,
                   help="random training subsample (0: the whole split; its tokenization is part of each run)")
    p.add_argument("--test-examples", type=int, default=0, help="random test subsample (0: the whole split)")
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="cores to split (default: all)")
    p.add_argument("--out", help="results file (default bench/results/<date>_packing_cpu.txt; '-' for none)")
    args = p.parse_args(argv)
    old_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: report what finished
    import torch
    from studykit.hardware import cpu_name
    quick = args.quick
    s = {"model": "tiny-bert" if quick else "all-minilm-l6-v2", "dataset": "restaurant_sup",
         "data_dir": str(FIXTURE_DATA if quick else REAL_DATA), "runs": 2 if quick else args.runs,
         "max_steps": 2 if quick else args.max_steps, "repeats": 1 if quick else args.repeats,
         "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"}
    subset_dir = None
    if args.train_examples and not quick:  # a subsample: less data preparation and evaluation per run
        from bench.subsets import write_subset
        subset_dir = Path(tempfile.mkdtemp(prefix="studykit-packing-data-"))
        s["data_dir"] = str(write_subset(REAL_DATA, subset_dir, s["dataset"], args.train_examples,
                                         args.test_examples or 10 ** 9))
        s["subsample"] = f"{args.train_examples} train / {args.test_examples or 'all'} test examples"
    arms = [(prec, w, t) for prec in args.precisions.split(",") for w, t in layouts(args.cores)]
    out_path = (None if args.out == "-" or (quick and not args.out)
                else Path(args.out) if args.out else report.default_out_path("packing_cpu"))
    tee = report.Tee(sys.stdout)
    sys.stdout = tee
    work = Path(tempfile.mkdtemp(prefix="studykit-packing-"))
    results = []
    try:
        print(f"{s['runs']} runs of {s['model']} on {s['dataset']} ({s.get('subsample', 'whole splits')} of "
              f"{s['data_dir']}), {s['max_steps']} steps of "
              f"batch 32 + final test evaluation each; {s['machine']}")
        try:
            for rep in range(s["repeats"]):
                for prec, w, t in (arms if rep % 2 == 0 else arms[::-1]):
                    r = time_grid(s, work, prec, w, t, f"r{rep}_{prec}_{w}x{t}")
                    results.append(r)
                    print(f"  rep {rep + 1} {prec:4s} {w} worker(s) x {t} thread(s): {r['wall_s']:7.1f} s "
                          f"({r['runs_per_min']:.2f} runs/min), load {r['load_before']:.1f} -> "
                          f"{r['load_after']:.1f}", flush=True)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: report the grids that finished
            print(f"\ninterrupted: {len(results)} of {s['repeats'] * len(arms)} grids finished", flush=True)
        summary = {}
        print("\nmedian wall time of the grid (lower is better):")
        for prec, w, t in arms:
            mine = [r for r in results if (r["precision"], r["workers"], r["threads"]) == (prec, w, t)]
            if not mine:
                continue
            med = statistics.median(r["wall_s"] for r in mine)
            summary[f"{prec}_{w}x{t}"] = {"median_wall_s": med, "walls_s": [r["wall_s"] for r in mine],
                                         "f1_macro": mine[0]["f1_macro"]}
            print(f"  {prec:4s} {w} x {t}: {med:7.1f} s   macro-F1 per run {[round(f, 4) for f in mine[0]['f1_macro']]}")
        for prec in args.precisions.split(","):
            if not any(k.startswith(prec) for k in summary):
                continue
            best = min((k for k in summary if k.startswith(prec)), key=lambda k: summary[k]["median_wall_s"])
            print(f"  best for {prec}: {best.split('_')[1]} (workers x threads)")
            summary[f"best_{prec}"] = best.split("_")[1]
        loads = [x for r in results for x in (r["load_before"], r["load_after"])]
        print(f"1-minute load average over the measurement: {min(loads):.1f} to {max(loads):.1f} "
              f"on {os.cpu_count()} cores (other jobs shared the machine when above ~{args.cores})")
        out = {"settings": s, "runs": results, "summary": summary}
        report.json_line(out)
    finally:
        sys.stdout = tee.stream
        signal.signal(signal.SIGTERM, old_handler)
        shutil.rmtree(work, ignore_errors=True)
        if subset_dir:
            shutil.rmtree(subset_dir, ignore_errors=True)
    if out_path:
        report.write_results(out_path, report.header(argv, _commit(), "bench/packing.py"), tee.copy.getvalue())
        print(f"written to {out_path}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
