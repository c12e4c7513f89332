"""Run a study grid from the shell; the same code the notebooks call.

    python train.py task2 --profile fast                       # one process (CPU or one GPU)
    python train.py fetch --profile full                       # on a machine with network: models and data
    python train.py task2 --profile full --plan                # what fits which GPU, before a grid starts
    python train.py task3 --profile reference --epochs 1 --seeds 1   # any RunConfig field overrides the profile
    accelerate launch --multi_gpu --num_processes 8 train.py task2 --profile full   # DDP, one run at a time
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train.py task2 --profile fast

Finished runs are skipped, so the same command resumes an interrupted grid. The options below are
derived from `RunConfig`'s fields (their help is the field's own).
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import textwrap
from typing import Optional

from accelerate import PartialState
from transformers import HfArgumentParser

from studykit.cli import grid_report
from studykit.config import RunConfig
from studykit.fetch import main as fetch_main
from studykit.grid import SettingsError, run_grid
from studykit.memory import plan_study
from studykit.profiles import PROFILES, study_configs

_CHOSEN_BY_PROFILE = ("model_name", "dataset", "seed", "task")


@dataclasses.dataclass
class Study:
    task: str = dataclasses.field(metadata={"help": "which study", "choices": sorted(PROFILES)})
    profile: str = dataclasses.field(default="fast", metadata={
        "help": "fast (default) | reference | full | parity (the first reference grid, to compare precisions)",
        "choices": sorted(PROFILES["task2"])})
    models: Optional[list[str]] = dataclasses.field(default=None, metadata={"help": "models (default: the profile's)"})
    datasets: Optional[list[str]] = dataclasses.field(default=None, metadata={"help": "datasets (default: the profile's)"})
    seeds: Optional[list[int]] = dataclasses.field(default=None, metadata={"help": "seeds (default: the profile's)"})
    retry_failed: bool = dataclasses.field(default=False, metadata={"help": "run failed runs again"})
    plan: bool = dataclasses.field(default=False, metadata={
        "help": "print the memory plan of this grid (peak memory per GPU at each cell's batch and the data's longest "
                "batch, the largest per_device_batch_size that fits 8/24/40/80 GiB cards) and exit without training"})


def _optional(kind):
    """The field's type as an optional override (None: the profile's value)."""
    kind = eval(kind, vars(__import__("builtins"))) if isinstance(kind, str) else kind  # `from __future__` strings
    args = getattr(kind, "__args__", None)
    base = next(a for a in args if a is not type(None)) if args else kind
    return Optional[base]


# Every RunConfig field the profile does not choose, as an override defaulting to None (the profile's value).
Overrides = dataclasses.make_dataclass("Overrides", [
    (f.name, _optional(f.type), dataclasses.field(
        default=None, metadata={"help": f"{f.metadata['help']} (RunConfig default: {f.default!r})"
                                if f.default is not dataclasses.MISSING else f.metadata["help"]}))
    for f in dataclasses.fields(RunConfig) if f.name not in _CHOSEN_BY_PROFILE])


def format_plan(plan, width: int) -> str:
    """The plan as a table that wraps to `width` columns, its long texts (where the lengths come from, why a
    row has no estimate) below it as wrapped lines rather than as cells."""
    texts = [c for c in ("lengths from", "note") if c in plan]
    table = plan.drop(columns=texts).rename(columns=lambda c: c.replace("max per-device batch, ", "batch fits "))
    lines = [table.to_string(line_width=width)]
    for column in texts:
        for value in sorted(set(plan[column].dropna())):
            lines.append(textwrap.fill(f"{column}: {value}", width, subsequent_indent="  "))
    return "\n".join(lines)


def main(argv=None):
    parser = HfArgumentParser((Study, Overrides), description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fetch"]:  # `train.py fetch --profile full`: models and data for offline compute nodes
        return fetch_main(argv[1:])
    if argv and not argv[0].startswith("-"):
        argv = ["--task", *argv]  # the task as the first word, as before: `train.py task2 ...`
    study, overrides = parser.parse_args_into_dataclasses(args=argv)
    configs = study_configs(study.task, study.profile, models=study.models, datasets=study.datasets,
                            seeds=study.seeds, **dataclasses.asdict(overrides))
    if study.plan:
        print(format_plan(plan_study(configs), shutil.get_terminal_size().columns))
        return 0
    try:
        table = run_grid(configs, retry_failed=study.retry_failed)
    except SettingsError as err:  # known before any run: the message names each problem and its fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    text, code = grid_report(table)
    if PartialState().is_main_process:
        print(text)
    PartialState().destroy_process_group()  # avoids a rare gloo hang at exit
    return code if PartialState().is_main_process else 0


if __name__ == "__main__":
    sys.exit(main())
