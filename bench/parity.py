"""Parity: the same reference grid trained two ways (fp32 vs bf16, or torch's vs the int16-mask dropout),
compared run against run.

    DATA_DIR=../shared/data python bench/parity.py                    # fp32 vs bf16 (both must have run)
    DATA_DIR=../shared/data python bench/parity.py --compare dropout  # bf16: torch's vs int16-mask dropout
    python bench/parity.py --data-dir DIR --results-dir DIR --out FILE

The real data must be there: runs are matched by config hash, which covers the data files' content.

The runs come from the `parity` profile (the first reference grid's settings: MiniLM, 3 seeds, both tasks),
trained once with precision="fp32" and once with bf16 autocast (`python train.py task2 --profile parity
--precision fp32`, and again with `--precision bf16`). They are matched by config hash, paired by seed, and for
every dataset x method the bf16 - fp32 difference in macro-F1 and accuracy is printed with its 95 % t-interval
(studykit.statistics.paired_comparison), plus the training time of each precision. No training happens here.
`--compare dropout` pairs the bf16 runs (torch's dropout, as the profile pins) with the same grid run with
`--dropout_kernel int16` (studykit/dropout.py), the same way.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from studykit.profiles import study_configs  # noqa: E402
from studykit.results import load_results, select_runs  # noqa: E402
from studykit.statistics import format_interval, paired_comparison  # noqa: E402

# What each comparison sets on top of the parity profile: (baseline, candidate), each a label and overrides.
COMPARISONS = {
    "precision": (("fp32", dict(precision="fp32")), ("bf16", dict(precision="bf16"))),
    "dropout": (("torch", dict(precision="bf16")), ("int16", dict(precision="bf16", dropout_kernel="int16"))),
}
PRECISIONS = tuple(label for label, _ in COMPARISONS["precision"])


def parity_runs(results_dir: Path, data_dir=None, compare: str = "precision", seeds=None) -> pd.DataFrame:
    """The parity profile's finished runs of both arms, one row per run, `arm` = the arm's name ("fp32",
    "bf16", ...; `training_method` stays the run's method); `seeds`: these seeds instead of the profile's."""
    frames = []
    for task in ("task2", "task3"):
        results = load_results(results_dir, task=task)
        for label, overrides in COMPARISONS[compare]:
            configs = study_configs(task, "parity", results_dir=str(results_dir), data_dir=data_dir, seeds=seeds,
                                    **overrides)
            chosen = select_runs(results, configs)
            frames.append(chosen.assign(arm=label, task=task))
    return pd.concat(frames, ignore_index=True)


def parity_table(runs: pd.DataFrame, compare: str = "precision") -> pd.DataFrame:
    """Per dataset x training method: candidate - baseline paired by seed, for macro-F1 and accuracy, and
    the training time of each."""
    base, cand = (label for label, _ in COMPARISONS[compare])
    rows = []
    for (dataset, method), part in runs.groupby(["dataset", "training_method"]):
        row = {"dataset": dataset, "method": method}
        if set(part.arm) != {base, cand}:  # one arm has not run this cell yet
            rows.append({**row, "pairs": 0})
            continue
        for metric in ("f1_macro", "accuracy"):
            s = paired_comparison(part, base, cand, metric, by="arm")
            row.update({f"{metric} {base}": part.loc[part.arm == base, metric].mean(),
                        f"{metric} {cand}": part.loc[part.arm == cand, metric].mean(),
                        f"{metric} diff": s["mean_diff"], f"{metric} 95% CI": format_interval(s["ci95"]),
                        "pairs": s["n"]})
        for label in (base, cand):
            row[f"train s {label}"] = part.loc[part.arm == label, "train_time_s"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default=str(ROOT / "results" / "parity"))
    parser.add_argument("--data-dir", default=None, help="where the real data is (its content names the runs)")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="precision",
                        help="precision: bf16 - fp32; dropout: int16-mask - torch's dropout (both bf16)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to pair (default: the profile's, 1-3)")
    args = parser.parse_args(argv)
    arms = [label for label, _ in COMPARISONS[args.compare]]
    runs = parity_runs(Path(args.results_dir), args.data_dir, args.compare, args.seeds)
    counts = runs.groupby("arm").size().reindex(arms, fill_value=0)
    if counts.min() == 0:
        hint = ("--precision fp32 (and bf16; then task3)" if args.compare == "precision"
                else "--precision bf16 (and again with --dropout_kernel int16)")
        print(f"parity needs runs of both arms ({', '.join(arms)}) under {args.results_dir}; found "
              f"{counts.to_dict()}. Run: python train.py task2 --profile parity {hint}")
        return 1
    table = parity_table(runs, args.compare)
    pd.set_option("display.width", 200)
    what = ("bf16 autocast minus fp32" if args.compare == "precision"
            else "int16-mask dropout minus torch's dropout, both bf16")
    lines = [
        f"Parity: {what}, paired by seed (runs under {args.results_dir}).",
        f"Runs: {counts.to_dict()}; model {', '.join(sorted(runs['model_name'].unique()))}; hardware "
        f"{'; '.join(sorted(runs['hardware'].unique()))}.",
        "",
        table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
        "",
        "Total training time: " + ", ".join(
            f"{p} {runs.loc[runs.arm == p, 'train_time_s'].sum() / 60:.1f} min in "
            f"{(runs.arm == p).sum()} runs" for p in arms),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
