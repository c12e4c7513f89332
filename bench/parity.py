"""Precision parity: the same reference grid trained in fp32 and in bf16, compared run against run.

    DATA_DIR=../shared/data python bench/parity.py   # reads results/parity (both precisions must have run)
    python bench/parity.py --data-dir DIR --results-dir DIR --out FILE

The real data must be there: runs are matched by config hash, which covers the data files' content.

The runs come from the `parity` profile (the first reference grid's settings: MiniLM, 3 seeds, both tasks),
trained once with precision="fp32" and once with bf16 autocast (`python train.py task2 --profile parity
--precision fp32`, and again with `--precision bf16`). They are matched by config hash, paired by seed, and for
every dataset x method the bf16 - fp32 difference in macro-F1 and accuracy is printed with its 95 % t-interval
(studykit.analysis.paired_statistics), plus the training time of each precision. No training happens here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from studykit.analysis import format_interval, paired_statistics, select_runs  # noqa: E402
from studykit.profiles import study_configs  # noqa: E402
from studykit.results import load_results  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def parity_runs(results_dir: Path, data_dir=None) -> pd.DataFrame:
    """The parity profile's finished runs of both precisions, one row per run, `method` = the precision."""
    frames = []
    for task in ("task2", "task3"):
        results = load_results(results_dir, task=task)
        for precision in PRECISIONS:
            configs = study_configs(task, "parity", results_dir=str(results_dir), data_dir=data_dir,
                                    precision=precision)
            chosen = select_runs(results, configs)
            frames.append(chosen.assign(method=precision, task=task))
    return pd.concat(frames, ignore_index=True)


def parity_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x training method: bf16 - fp32 paired by seed, for macro-F1 and accuracy, and the time."""
    rows = []
    for (dataset, method), part in runs.groupby(["dataset", "training_method"]):
        row = {"dataset": dataset, "method": method}
        if set(part.method) != set(PRECISIONS):  # one precision has not run this cell yet
            rows.append({**row, "pairs": 0})
            continue
        for metric in ("f1_macro", "accuracy"):
            s = paired_statistics(part, "fp32", "bf16", metric)
            row.update({f"{metric} fp32": part.loc[part.method == "fp32", metric].mean(),
                        f"{metric} bf16": part.loc[part.method == "bf16", metric].mean(),
                        f"{metric} diff": s["mean_diff"], f"{metric} 95% CI": format_interval(s["ci95"]),
                        "pairs": s["n"]})
        for precision in PRECISIONS:
            row[f"train s {precision}"] = part.loc[part.method == precision, "train_time_s"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default=str(ROOT / "results" / "parity"))
    parser.add_argument("--data-dir", default=None, help="where the real data is (its content names the runs)")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    runs = parity_runs(Path(args.results_dir), args.data_dir)
    counts = runs.groupby("method").size().reindex(list(PRECISIONS), fill_value=0)
    if counts.min() == 0:
        print(f"parity needs runs of both precisions under {args.results_dir}; found {counts.to_dict()}. "
              "Run: python train.py task2 --profile parity --precision fp32 (and bf16; then task3)")
        return 1
    table = parity_table(runs)
    pd.set_option("display.width", 200)
    lines = [
        f"Precision parity: bf16 autocast minus fp32, paired by seed (runs under {args.results_dir}).",
        f"Runs: {counts.to_dict()}; model {', '.join(sorted(runs['model_name'].unique()))}; hardware "
        f"{'; '.join(sorted(runs['hardware'].unique()))}.",
        "",
        table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
        "",
        "Total training time: " + ", ".join(
            f"{p} {runs.loc[runs.method == p, 'train_time_s'].sum() / 60:.1f} min in "
            f"{(runs.method == p).sum()} runs" for p in PRECISIONS),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
