"""A small grid for the reliability tests: run in a subprocess (to be killed), by `torchrun` /
`accelerate launch` (2 processes), or imported for its configs.

    python tests/scripts/grid.py RESULTS_DIR DATA_DIR [SEEDS]   # e.g. SEEDS=1,2,3
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("PROGRESS", "text")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from studykit.config import RunConfig  # noqa: E402
from studykit.grid import run_grid  # noqa: E402


def make_config(results_dir, data_dir, seed=1, **overrides) -> RunConfig:
    """One tiny run: ~1-3 s on one CPU thread. dropout=0 so 1- and 2-process runs are comparable; eval
    batches of 5 so that 2 processes see a ragged last batch that gather_for_metrics must trim."""
    settings = dict(epochs=2, batch_size=16, learning_rate=3e-3, evals_per_epoch=2, log_every=2,
                    dropout=0.0, eval_batch_size=5, num_threads=1,
                    data_dir=str(data_dir), results_dir=str(results_dir))
    settings.update(overrides)
    return RunConfig(settings.pop("model_name", "tiny-bert"), "restaurant_sup", seed=seed, **settings)


def make_grid(results_dir, data_dir, seeds=(1, 2, 3), **overrides) -> list:
    return [make_config(results_dir, data_dir, seed=s, **overrides) for s in seeds]


if __name__ == "__main__":
    seeds = tuple(int(s) for s in sys.argv[3].split(",")) if len(sys.argv) > 3 else (1, 2, 3)
    frame = run_grid(make_grid(sys.argv[1], sys.argv[2], seeds), stop_on_error=True)
    from accelerate import PartialState
    state = PartialState()
    print(f"rank {state.process_index} of {state.num_processes}: grid done; statuses "
          + ",".join(f"{seed}:{status}" for seed, status in zip(frame["seed"], frame["status"])), flush=True)
    state.wait_for_everyone()
    if state.use_distributed:
        state.destroy_process_group()  # avoids the rare gloo hang at interpreter exit
