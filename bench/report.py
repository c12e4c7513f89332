"""The bench's report: medians and paired ratios from the raw measurements, the table with the targets,
the JSON line, and the results file written atomically under bench/results/."""
from __future__ import annotations

import datetime
import io
import json
import math
import os
import statistics
import sys
from pathlib import Path

from bench.measure import ratio
from bench.sides import SIDES

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Issue 5: ours vs the Trainer's defaults and its length grouping; issue 13: vs its best CPU setting, the
# whole restaurant run, the whole reference grid. Printed beside the figures; no test asserts them.
TARGETS = {"ratio_vs_trainer": 1.3, "ratio_vs_trainer_gbl": 1.0, "ratio_vs_trainer_bf16_gbl": 1.0,
           "mfu_seq128": 0.70, "data_prep_second_s": 1.0, "whole_run_ratio": 1.2, "reference_grid_s": 30 * 60}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def geo_mean(values):
    values = [v for v in values if v is not None]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    return {"rate": f"{value:,.1f}", "frac": f"{100 * value:.1f} %", "s": f"{value:.2f} s",
            "gb": f"{value / 2 ** 30:.2f} GB", "gflops": f"{value / 1e9:.1f}", "x": f"{value:.2f}x",
            "int": f"{value}", "min": f"{value / 60:.1f} min"}[kind]


# ----------------------------------------------------------------------------- the throughput bench

def summarize(s: dict, results, seq128, peaks_by_precision, sustained, prep, peaks, evals) -> dict:
    """Medians per side, paired ratios, the two MFU figures and the targets, as one JSON-able dict."""
    precision = s["precision"]
    peak = max(peaks_by_precision[precision])
    out = {"precision_ours": precision,
           "matmul_peak_flops": {p: max(v) for p, v in peaks_by_precision.items() if v},
           "matmul_probes": {p: len(v) for p, v in peaks_by_precision.items()},
           "matmul_sustained_flops_median": median(sustained), "datasets": {}}
    ratios = {other: [] for other in SIDES if other != "ours"}
    for ds, by_side in results.items():
        row = {}
        for side, runs in by_side.items():
            med = {k: median([r[k] for r in runs]) for k in
                   ("train_samples_per_s", "train_tokens_per_s", "data_prep_s", "padding_fraction", "accuracy",
                    "f1_macro")}
            full_evals = evals[ds][side]
            med["eval_samples_per_s"] = median([r["eval_samples_per_s"] for r in full_evals])
            for key in ("eval_padding_fraction", "eval_batch_size", "eval_examples"):
                med[key] = full_evals[0][key] if full_evals else None
            med["achieved_flops"] = median([r["train_flops"] * r["train_samples_per_s"] / r["train_examples"]
                                            for r in runs])
            med["best_train_samples_per_s"] = max(r["train_samples_per_s"] for r in runs)
            med["train_examples"] = runs[0]["train_examples"]
            med["train_tokens"] = median([r["train_tokens"] for r in runs])
            med["precision"] = runs[0]["precision"]
            row[side] = med
        for other in ratios:  # paired: ours over the other side in the same repeat, back to back
            paired = [o["train_samples_per_s"] / t["train_samples_per_s"] for o, t in zip(by_side["ours"], by_side[other])]
            row[f"ratio_vs_{other}"] = statistics.median(paired)
            row[f"ratio_vs_{other}_all"] = paired
            ratios[other].append(row[f"ratio_vs_{other}"])
        out["datasets"][ds] = row
    for other, values in ratios.items():
        out[f"ratio_vs_{other}"] = geo_mean(values)
    # MFU 1 of 2: ours on the real data (padding and short sequences included), geo-mean over datasets.
    out["mfu_real"] = geo_mean([ratio(row["ours"]["achieved_flops"], peak) for row in out["datasets"].values()])
    # MFU 2 of 2: ours in the steady state at max_length, no padding, the model's own dropout.
    if seq128:
        out["seq128_step_s"] = median([r["step_s"] for r in seq128])
        out["seq128_achieved_flops"] = median([r["achieved_flops"] for r in seq128])
        out["mfu_seq128"] = ratio(out["seq128_achieved_flops"], peak)
        out["seq128_achieved_flops_with_first_step"] = median([r["achieved_flops_with_first_step"] for r in seq128])
        out["seq128_full_length_fraction"] = min(r["max_length_fraction"] for r in seq128)
    out["data_prep_first_s"] = max(p["data_prep_first_s"] for p in prep.values())
    out["data_prep_second_s"] = max(p["data_prep_second_s"] for p in prep.values())
    out["data_prep"] = prep
    out["peak_memory_bytes"] = peaks
    out["targets"] = {k: TARGETS[k] for k in ("ratio_vs_trainer", "ratio_vs_trainer_gbl", "ratio_vs_trainer_bf16_gbl",
                                              "mfu_seq128", "data_prep_second_s")}
    out["targets_met"] = {k: (out.get(k) or 0) >= TARGETS[k] for k in out["targets"] if k != "data_prep_second_s"}
    out["targets_met"]["data_prep_second_s"] = out["data_prep_second_s"] < TARGETS["data_prep_second_s"]
    out["settings"] = s
    return out


def _line(label, value, target="", ok=None):
    mark = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"  {label:50s} {value:>10s}   {target:14s} {mark}")


def print_throughput(out: dict) -> None:
    s = out["settings"]
    label = {side: SIDES[side][0] for side in SIDES}
    precision = {side: out["precision_ours"] if side == "ours" else SIDES[side][1] for side in SIDES}
    print()
    print(f"Machine: {s['machine']}; native bf16 (AVX-512 BF16 or AMX): {'yes' if s['bf16_cpu'] else 'no'}; "
          f"{s['threads']} torch threads on every side and for the matmul probes.")
    print(f"Model {s['model']} on {s['data']} data; batch {s['batch_size']}, lr {s['lr']}, max_length "
          f"{s['max_length']}; each run trains "
          f"{'one epoch of a random ' + str(s['train_examples']) if s['train_examples'] else 'one mega-batch of the full'}"
          f"-example training set; {s['repeats']} repeats, sides alternated, medians.")
    print("Precision: " + ", ".join(f"{label[side]} {precision[side]}" for side in SIDES) + ".")
    for p, flops in out["matmul_peak_flops"].items():
        print(f"Matmul peak {p} ({s['matmul_size']}x{s['matmul_size']} torch.matmul, best of "
              f"{out['matmul_probes'][p]} probes): {fmt(flops, 'gflops')} GFLOP/s")
    if out["matmul_sustained_flops_median"]:
        print(f"Matmul {out['precision_ours']} sustained around the fixed-length runs (load indicator, not an MFU "
              f"denominator): median {fmt(out['matmul_sustained_flops_median'], 'gflops')} GFLOP/s")
    if s["data"] == "fixtures":
        print("NOTE: a tiny random model on the test fixtures: this run tests the benchmark itself; its figures "
              "measure nothing about the engine.")
    print("FLOPs per example of s non-pad tokens: 6*N_encoder*s + 6*N_head + 12*L*d*s^2 (padding counts as waste).")
    rows = [("train samples/s", "train_samples_per_s", "rate"), ("  best of the repeats", "best_train_samples_per_s", "rate"),
            ("train tokens/s (non-pad)", "train_tokens_per_s", "rate"),
            ("padding fraction (train)", "padding_fraction", "frac"), ("achieved GFLOP/s", "achieved_flops", "gflops"),
            ("data prep this run", "data_prep_s", "s"),
            ("eval samples/s (full test)", "eval_samples_per_s", "rate"), ("  eval batch", "eval_batch_size", "int"),
            ("  eval padding fraction", "eval_padding_fraction", "frac"), ("macro-F1 (1 epoch)", "f1_macro", "frac")]
    width, col = 28, 18
    for ds, row in out["datasets"].items():
        o, full = row["ours"], out["data_prep"][ds]
        print(f"\n{ds}: each run trains {o['train_examples']} examples; evaluation speed over all "
              f"{o['eval_examples']} test examples")
        print(f"{'':{width}s}" + "".join(f"{label[side]:>{col}s}" for side in SIDES))
        for name, key, kind in rows:
            print(f"{name:{width}s}" + "".join(f"{fmt(row[side][key], kind):>{col}s}" for side in SIDES))
        print(f"{'ours / side (paired median)':{width}s}{'':>{col}s}"
              + "".join(f"{fmt(row['ratio_vs_' + side], 'x'):>{col}s}" for side in SIDES if side != "ours"))
        grouped, shuffled = fmt(full["full_epoch_padding_grouped"], "frac"), fmt(full["full_epoch_padding_random"], "frac")
        print(f"{'padding, full-data epoch':{width}s}{grouped:>{col}s}{shuffled:>{col}s}{grouped:>{col}s}{grouped:>{col}s}"
              f"   (samplers over all {full['examples']} examples)")
    print(f"\n{'peak memory (RSS, training)':{width}s}"
          + "".join(f"{fmt(out['peak_memory_bytes'][side], 'gb'):>{col}s}" for side in SIDES))
    met, t = out["targets_met"], out["targets"]
    print(f"\n{'Summary':52s} {'measured':>10s}   target")
    for side in SIDES:
        if side != "ours":
            key = f"ratio_vs_{side}"
            _line(f"ours / {label[side]} (geo-mean of datasets)", fmt(out[key], "x"), f">= {t[key]:.2f}x", met[key])
    peak_label = f"against the {out['precision_ours']} matmul peak"
    if "mfu_seq128" in out:
        _line(f"MFU at {s['max_length']} tokens, steady state", fmt(out["mfu_seq128"], "frac"),
              f">= {100 * t['mfu_seq128']:.0f} %", met["mfu_seq128"])
        print(f"    ({peak_label}; batch {s['seq128_batch_size']}, no padding, the model's dropout; step "
              f"{fmt(out['seq128_step_s'], 's')}; {fmt(out['seq128_achieved_flops'], 'gflops')} GFLOP/s, "
              f"{fmt(out['seq128_achieved_flops_with_first_step'], 'gflops')} with the first step)")
    _line("MFU on the real data (ours)", fmt(out["mfu_real"], "frac"))
    print(f"    ({peak_label}; padding and short sequences included)")
    _line("data prep, first run (full data)", fmt(out["data_prep_first_s"], "s"))
    _line("data prep, second run (cached)", fmt(out["data_prep_second_s"], "s"), "< 1 s", met["data_prep_second_s"])


# ----------------------------------------------------------------------------- whole runs

def summarize_whole_runs(s: dict, runs: dict) -> dict:
    """Wall time of whole runs per side, and ours over the other side paired by repeat."""
    out = {"settings": s, "runs": runs, "sides": {}}
    for side, rs in runs.items():
        out["sides"][side] = {k: median([r[k] for r in rs]) for k in
                              ("wall_s", "in_run_wall_s", "train_time_s", "data_prep_s", "f1_macro", "accuracy")}
        out["sides"][side]["precision"] = rs[0]["precision"]
        out["sides"][side]["dropout_kernel"] = rs[0].get("dropout_kernel", "torch")
        out["sides"][side]["startup_s"] = median([r["wall_s"] - r["in_run_wall_s"] for r in rs])
    other = [side for side in runs if side != "ours"][0]
    out["other_side"] = other
    out["whole_run_ratio"] = median([t["wall_s"] / o["wall_s"] for o, t in zip(runs["ours"], runs[other])])
    f1 = {side: [r["f1_macro"] for r in rs] for side, rs in runs.items()}
    out["f1_macro_mean"] = {side: statistics.mean(v) for side, v in f1.items()}
    out["f1_macro_sd"] = {side: statistics.stdev(v) if len(v) > 1 else None for side, v in f1.items()}
    out["f1_macro_diff"] = out["f1_macro_mean"]["ours"] - out["f1_macro_mean"][other]
    out["targets"] = {"whole_run_ratio": TARGETS["whole_run_ratio"]}
    out["targets_met"] = {"whole_run_ratio": out["whole_run_ratio"] >= TARGETS["whole_run_ratio"]}
    return out


def print_whole_runs(out: dict) -> None:
    s, other = out["settings"], out["other_side"]
    print(f"\nOne whole {s['dataset']} run per process: {s['model']}, 1 epoch, batch {s['batch_size']}, lr {s['lr']}, "
          f"max_length {s['max_length']}, one final evaluation on the test split; {s['threads']} threads; "
          f"{s['repeats']} repeats, sides alternated; {s['machine']}.")
    if s["data"] == "fixtures":
        print("NOTE: a tiny random model on the test fixtures: this tests the benchmark, not the engine.")
    cols = ("wall_s", "startup_s", "data_prep_s", "train_time_s", "f1_macro")
    print(f"{'':22s}{'precision':>10s}{'dropout':>9s}" + "".join(f"{c:>14s}" for c in cols))
    for side, med in out["sides"].items():
        print(f"{SIDES[side][0]:22s}{med['precision']:>10s}{med['dropout_kernel']:>9s}"
              + "".join(f"{fmt(med[c], 'frac' if c == 'f1_macro' else 's'):>14s}" for c in cols))
    print("  (wall: the process's whole life; start-up: wall minus the run itself (imports, process start); "
          "medians; each repeat is in the JSON line)")
    _line(f"{SIDES[other][0]} wall / ours wall (paired)", fmt(out["whole_run_ratio"], "x"),
          f">= {out['targets']['whole_run_ratio']:.2f}x", out["targets_met"]["whole_run_ratio"])
    sd = out["f1_macro_sd"]
    print(f"  macro-F1 over seeds {s['seed']}..{s['seed'] + s['repeats'] - 1}: " + "; ".join(
        f"{SIDES[side][0]} {fmt(mean, 'frac')}" + (f" +- {fmt(sd[side], 'frac')}" if sd[side] is not None else "")
        for side, mean in out["f1_macro_mean"].items()) + f"; ours - other {100 * out['f1_macro_diff']:+.1f} points")


def print_grid(out: dict) -> None:
    s = out["settings"]
    print(f"\n{out['what']}: {out['runs']} run(s) of the {s['profile']} profile's settings ({', '.join(out['datasets'])}; "
          f"seeds {out['seeds']}), ours' precision {s['precision']} and {s['dropout_kernel']} dropout, train + "
          f"evaluations, in one fresh process; {s['cpu_kind']}; torch {s['torch']}")
    if s["data"] == "fixtures":
        print("NOTE: the fast profile on the test fixtures: this tests the benchmark, not the engine.")
    _line(f"wall time ({fmt(out['wall_s'], 'min')}; process, start-up and data prep included)", fmt(out["wall_s"], "s"),
          "<= 30 min" if "target_met" in out else "",
          out.get("target_met"))
    for r in out["per_run"]:
        method = "full" if r["adapter_size"] is None else f"adapter{r['adapter_size']}"
        print(f"    {r['task']} {method:10s} {r['dataset']:15s} seed {r['seed']}  train {fmt(r['train_time_s'], 's'):>10s}  in-run wall "
              f"{fmt(r['wall_time_s'], 's'):>10s}  macro-F1 {fmt(r['f1_macro'], 'frac')}  ({r['precision']}, "
              f"{r['dropout_kernel']} dropout)")
    runs = out["per_run"]
    print(f"  sum of the runs' training times {fmt(sum(r['train_time_s'] for r in runs), 'min')}, of their in-run wall "
          f"times {fmt(sum(r['wall_time_s'] for r in runs), 'min')} (the grid's workers run side by side)")


# ----------------------------------------------------------------------------- the results file

class Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy for the results file."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text):
        self.stream.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()


def default_out_path(what: str) -> Path:
    """bench/results/<date>_<what>.txt, with _2, _3, ... rather than overwriting an earlier result."""
    stem = f"{datetime.date.today().isoformat()}_{what}"
    path, k = RESULTS_DIR / f"{stem}.txt", 2
    while path.exists():
        path, k = RESULTS_DIR / f"{stem}_{k}.txt", k + 1
    return path


def write_results(path: Path, header: str, text: str) -> None:
    """The run's whole output under a header (command, commit, date), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + text)
    os.replace(tmp, path)


def header(argv, commit: str, script: str = "bench/throughput.py") -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"# python {script} {' '.join(argv)}\n# commit {commit}, {now}; written by the script\n"


def json_line(out: dict) -> None:
    print(json.dumps(out, default=str))
    sys.stdout.flush()
