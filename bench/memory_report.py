"""The memory notebook's slow tables, computed once and committed under results/memory/:

- validation.csv  the estimated step peak vs the measured one, every case of `validation_cases` (CPU, ~3 min);
- anchors.csv     peft's method_comparison Llama-3.2-3B figures beside our peak (`compare_with_anchors`, ~3 min);
- answers.csv     Q1/Q2 for Llama-3.2-3B at 4 x 512 under our trainer's scheme and PEFT users' (~2 min);
- walk.csv        the report's 30 / 12.12 GB walked to our Q1/Q2 answers, one cause at a time (~1 min);
- plan.csv        the planner on the full profile of Tasks 2 and 3, for a GPU (~1 min);
- sizes.csv       the estimated step peak vs the measured one for every model x method the reference study
                  trains, at both sizes (MiniLM, MPNet-base), at its longest batch, in its runs' precision (~5 min).

    python bench/memory_report.py [--only validation|anchors|answers|walk|plan|sizes] [--out results/memory]

Each file's `produced_by` column names this script and the torch/transformers versions; the notebook reads
them and says so, and tests/test_memory.py recomputes one cheap validation row and checks it against the file.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def produced_by() -> str:
    import torch
    import transformers
    return f"bench/memory_report.py; torch {torch.__version__}, transformers {transformers.__version__}"


def write(name, frame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    frame = frame.assign(produced_by=produced_by())
    frame.to_csv(out / f"{name}.csv", index=False)
    print(f"wrote {out / f'{name}.csv'} ({len(frame)} rows)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("validation", "anchors", "answers", "walk", "plan", "sizes"))
    parser.add_argument("--out", default="results/memory")
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from studykit import memory as M
    out = Path(args.out)
    if args.only in (None, "validation"):
        write("validation", M.validate_estimates(), out)
    if args.only in (None, "anchors"):
        write("anchors", M.compare_with_anchors(), out)
    if args.only in (None, "answers"):
        write("answers", M.answers_side_by_side(), out)
    if args.only in (None, "walk"):
        write("walk", walks(), out)
    if args.only in (None, "plan"):
        import utils
        write("plan", utils.plan_study(utils.study_configs("task2", "full") + utils.study_configs("task3", "full")),
              out)
    if args.only in (None, "sizes"):
        import utils
        write("sizes", M.validate_on_study(utils.study_configs("task2", "reference") + utils.study_configs("task3", "reference")),
              out)


def walks():
    """report_walk for Q1 and Q2 (LoRA r=16) under our trainer's scheme, as rows (walk, step, total_bytes, note)."""
    import pandas as pd

    from studykit import memory as M
    from studykit.memory.anchors import SIDE_BY_SIDE
    ours = dict(next(iter(SIDE_BY_SIDE.values())))
    ours.pop("fp32_lora")
    kw = dict(optimizer=ours["optimizer"], grad_clip=ours["grad_clip"])
    rows = []
    for walk, extra in (("Q1: full fine-tuning", {}), ("Q2: LoRA r=16", dict(peft="lora", lora_rank=16))):
        for step, total, note in M.report_walk("llama-3.2-3b", ours["scheme"], 4, 512, **extra, **kw):
            rows.append(dict(walk=walk, step=step, total_bytes=total, note=note))
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
