"""Run a study grid from the shell; the same code the notebooks call.

    python train.py task2 --profile fast                       # one process (CPU or one GPU)
    accelerate launch --multi_gpu --num_processes 8 train.py task2 --profile full   # DDP, one run at a time
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train.py task2 --profile fast

Finished runs are skipped, so the same command resumes an interrupted grid.
"""
import argparse

from studykit.profiles import PROFILES, study_configs
from studykit.training import run_grid


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(PROFILES))
    parser.add_argument("--profile", default="fast", choices=["fast", "reference", "full"])
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--data-dir")
    parser.add_argument("--results-dir")
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    args = parser.parse_args()
    configs = study_configs(args.task, args.profile, models=args.models, datasets=args.datasets,
                            seeds=args.seeds, data_dir=args.data_dir, results_dir=args.results_dir)
    table = run_grid(configs, retry_failed=args.retry_failed)
    from accelerate import PartialState
    if PartialState().is_main_process:
        print(table[["dataset", "model_name", "seed", "status", "accuracy", "f1_macro"]].to_string())
    PartialState().destroy_process_group()  # avoids a rare gloo hang at exit


if __name__ == "__main__":
    main()
