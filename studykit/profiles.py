"""Profiles: the study's settings in one place, and environment-variable overrides for headless runs.

- `fast`: a tiny model built locally on the small fixture datasets; runs offline on any CPU in minutes.
  It proves the code path, not what fine-tuning does.
- `reference`: real pretrained encoders at two sizes, all-MiniLM-L6-v2 (22 M) and all-mpnet-base-v2 (110 M), on
  the real data, sized for a 2-core CPU: full fine-tuning, our adapters and LoRA, 5 seeds (MPNet-base's adapters
  and LoRA: 4), each selected on the dev split.
- `parity`: the first reference grid's settings, run in fp32 and in bf16 to compare the two precisions.
- `full`: the study itself (roberta-base, bert-base-uncased, scibert; 5 seeds); needs GPUs and the Hub.
"""
from __future__ import annotations

import ast
import json
import os
import platform

import torch

from .adapters import DEFAULT_ADAPTER_SIZE
from .config import RunConfig
from .data import resolve_data_dir
from .hardware import describe_machine, emulates_bf16

__all__ = ["PROFILES", "FIXTURE_DATA_DIR", "from_env", "study_configs", "models_run_on", "describe_setup"]

# The fast profile's data: the small fixture datasets of this repository, as a path relative to where the
# notebooks and train.py run (the repository root). Callers elsewhere set FIXTURE_DATA_DIR or pass data_dir.
FIXTURE_DATA_DIR = "tests/fixtures/data"
ALL_DATASETS = ["restaurant_sup", "acl_sup", "agnews_sup"]


def _each(common: dict, **by_dataset) -> dict:
    """One variant per dataset: `common`, updated by that dataset's own settings."""
    return {d: [dict(common, **by_dataset.get(d, {}))] for d in ALL_DATASETS}


def _without(runs: dict, datasets) -> dict:
    """`runs` without the variants of `datasets` (a stated cut)."""
    return {d: variants for d, variants in runs.items() if d not in datasets}


def _with_lora_dev_check(runs: dict) -> dict:
    """`runs` plus the LoRA learning-rate check on restaurant's dev split (seed 1 at the rate not chosen), made
    with MiniLM: the rate chosen there is used at every size."""
    check = dict(_PEFT["restaurant_sup"][0], **LORA_DEV_CHECK, models=[SMALL])
    return {**runs, "restaurant_sup": runs["restaurant_sup"] + [check]}


def _only(runs: dict, dataset: str, models: list[str]) -> dict:
    """The variants of `dataset` in `runs`, for `models` only (a cell one model size adds to a study)."""
    return {dataset: [dict(v, models=models) for v in runs[dataset]]}


def _seeds_at_base_size(runs: dict, seeds: list[int]) -> dict:
    """`runs` with each variant both sizes run split in two: MiniLM at the profile's seeds, MPNet-base at `seeds`
    only (a stated budget cut). Variants that name their models are kept as they are."""
    return {d: [w for v in variants for w in ([v] if "models" in v else
                                                [dict(v, models=[SMALL]), dict(v, models=[BASE], seeds=seeds)])]
            for d, variants in runs.items()}


def _plus(*runs: dict) -> dict:
    """The variants of every `runs`, per dataset, in order (cells of one study from several parts)."""
    return {d: [v for r in runs for v in r.get(d, [])] for d in dict.fromkeys(d for r in runs for d in r)}


def _with(runs: dict, *changes: dict) -> dict:
    """Every dataset's variant once per entry of `changes` (each a dict of RunConfig settings)."""
    return {d: [dict(v, **c) for v in variants for c in changes] for d, variants in runs.items()}


# A random tiny model needs a large learning rate and many passes over 96 examples; selected on the fixtures'
# dev splits like the reference runs (patience: three epochs of four evaluations: a random tiny model sits at the
# majority class for its first epoch or two), so the fast path covers selection too.
_FAST = _each(dict(epochs=8, batch_size=16, learning_rate=3e-3, num_threads=1, early_stopping_patience=12))
# The real MiniLM on a 2-core CPU: 5e-5 (1e-5 under-trains a 22M model in this budget); acl gets batch 16 and
# more epochs, or its 1688 examples give too few steps to learn. Every method is selected on the dev split
# (early_stopping_patience): the test metrics reported are those of the evaluation with the best dev macro-F1.
# Two evaluations (dev and test) per epoch.
# The committed reference and parity runs were made in bf16 autocast (on a CPU with AMX) and with torch's own
# dropout: these profiles pin both, so the report renders from those runs on any machine (precision "auto"
# would mean fp32 on a CPU without native bf16, and another config hash) and re-runs match. A CPU without
# native bf16 emulates it, slowly: a grid says so before it trains such runs, and PRECISION=fp32 (notebooks)
# or --precision fp32 (train.py) trains a study of its own instead. New profiles take the defaults ("auto").
_COMMITTED_RUNS = dict(precision="bf16", dropout_kernel="torch")
_BUDGET = dict(restaurant_sup=dict(epochs=3), acl_sup=dict(epochs=5, batch_size=16), agnews_sup=dict(epochs=2))
_REFERENCE = _each(dict(batch_size=32, learning_rate=5e-5, max_length=128, evals_per_epoch=2,
                        early_stopping_patience=2, **_COMMITTED_RUNS), **_BUDGET)
# PEFT methods train a few percent of the weights, adapters from a near-identity start: up to 1.5x the full
# fine-tuning epochs, stopped when dev macro-F1 has not improved for 3 evaluations (1.5 epochs). On acl the
# patience is 6 (3 epochs): with 3, adapter seed 1 stopped after 2 epochs still at the majority-class level on
# dev (macro-F1 0.114), a plateau the adapters leave later there than on restaurant.
_PEFT_BUDGET = dict(restaurant_sup=dict(epochs=5), acl_sup=dict(epochs=8, batch_size=16, early_stopping_patience=6),
                    agnews_sup=dict(epochs=3))
_PEFT = _each(dict(batch_size=32, max_length=128, evals_per_epoch=2, early_stopping_patience=3, **_COMMITTED_RUNS),
              **_PEFT_BUDGET)
# Learning rates. Adapters: 1e-3 (Houlsby et al. 2019 swept 3e-5..3e-3), not tuned here (the CPU budget); its
# dev macro-F1 on restaurant seed 1 (0.701) matched full fine-tuning's (0.704). LoRA r=8, alpha=16 on query and
# value: chosen on dev between Hu et al.'s 5e-4 (RoBERTa-base on GLUE, 30-80 epochs) and 2e-3, on restaurant
# seed 1 within this budget: dev macro-F1 0.433 at 5e-4, 0.679 at 2e-3. The 5e-4 run stays in the profile
# (seed 1 only) as the record of that choice.
ADAPTER_SETTINGS = dict(adapter_size=DEFAULT_ADAPTER_SIZE, learning_rate=1e-3)
# The budget cut (2 CPU cores): AG News runs at the small size only. MiniLM's runs there take 7-10 min of training
# each (2-3 epochs, 7,600 examples); MPNet-base costs 7.6-15x MiniLM's time per epoch in these runs (5.3x per
# step, measured alone), so its three methods x 5 seeds would add about 15 hours, and AG News is the dataset where
# the methods differ least (MiniLM: adapters 0.002 and LoRA 0.008 below full fine-tuning, 5 seeds).
BASE_SIZE_CUT = ("agnews_sup",)
SMALL, BASE = "all-minilm-l6-v2", "all-mpnet-base-v2"  # the reference study's two sizes
# The second budget cut: MPNet-base's adapters and LoRA run seeds 1-4. Seed 5 of its four PEFT cells would cost
# about 2.1 core-hours, 65 min of a 2-core CPU two runs at a time (measured: the seed-4 runs' wall time, 25-37 min
# each, on the 2-core AMD EPYC of the other runs), and did not fit the last session of the grid.
BASE_SIZE_PEFT_SEEDS = [1, 2, 3, 4]
LORA_SETTINGS = dict(method="lora", lora_rank=8, lora_alpha=16, learning_rate=2e-3)
LORA_DEV_CHECK = dict(LORA_SETTINGS, learning_rate=5e-4, seeds=[1])
_PEFT_METHODS = _with(_PEFT, ADAPTER_SETTINGS, LORA_SETTINGS)  # our adapters and LoRA, each at its chosen rate
# The settings of the first reference grid (no dev split, three test evaluations per epoch, the full-FT
# epochs for adapters too): kept to compare precisions on equal terms, fp32 runs against bf16 ones.
_PARITY = _each(dict(batch_size=32, learning_rate=5e-5, max_length=128, evals_per_epoch=3, **_COMMITTED_RUNS),
                **_BUDGET)
_REPORT = dict(epochs=4, batch_size=64, learning_rate=1e-5)  # the seed report's settings

# Each profile: models, seeds, data and, per dataset, the list of run settings (RunConfig keywords; a "seeds"
# entry there replaces the profile's seeds for that variant: a stated cut, which seeds asked for never widen).
PROFILES = {
    "task2": {
        "fast": dict(models=["tiny-bert", "tiny-roberta"], seeds=[1, 2], data_dir="fixtures", runs=_FAST),
        # The reference study at two sizes: all-MiniLM-L6-v2 (22 M, 6 x 384) and all-mpnet-base-v2 (110 M,
        # 12 x 768, roberta-base's shape), one recipe, so the two differ in the model only.
        "reference": dict(models=[SMALL, BASE], seeds=[1, 2, 3, 4, 5], data_dir=None,
                          runs=_plus(_without(_REFERENCE, BASE_SIZE_CUT), _only(_REFERENCE, "agnews_sup", [SMALL]))),
        "parity": dict(models=[SMALL], seeds=[1, 2, 3], data_dir=None, runs=_PARITY),
        "full": dict(models=["roberta-base", "bert-base-uncased", "allenai/scibert_scivocab_uncased"],
                     seeds=[1, 2, 3, 4, 5], data_dir=None,
                     runs=_each(_REPORT, agnews_sup=dict(epochs=5, learning_rate=2e-5))),
    },
    # Task 3: parameter-efficient runs of a roberta-family model (full profile) or of both sizes (reference),
    # compared with Task 2's full fine-tuning of the same model.
    "task3": {
        "fast": dict(models=["tiny-roberta"], seeds=[1, 2], data_dir="fixtures",
                     runs=_with(_FAST, dict(adapter_size=16), dict(adapter_size=16, learning_rate=1e-2))),
        "reference": dict(models=[SMALL, BASE], seeds=[1, 2, 3, 4, 5], data_dir=None,
                          runs=_with_lora_dev_check(_plus(_seeds_at_base_size(_without(_PEFT_METHODS, BASE_SIZE_CUT),
                                                                              BASE_SIZE_PEFT_SEEDS),
                                                          _only(_PEFT_METHODS, "agnews_sup", [SMALL])))),
        "parity": dict(models=[SMALL], seeds=[1, 2, 3], data_dir=None,
                       runs=_with(_PARITY, dict(adapter_size=DEFAULT_ADAPTER_SIZE, learning_rate=1e-3))),
        # Houlsby et al. 2019 swept 3e-5..3e-3; Pfeiffer et al. 2021 use 1e-4: 5e-4 is the middle of that
        "full": dict(models=["roberta-base"], seeds=[1, 2, 3, 4, 5], data_dir=None,
                     runs=_with(_each(_REPORT, agnews_sup=dict(epochs=6, learning_rate=5e-5)),
                                dict(adapter_size=DEFAULT_ADAPTER_SIZE), dict(adapter_size=DEFAULT_ADAPTER_SIZE, learning_rate=5e-4))),
    },
}


def from_env(name: str, default, kind=None):
    """`default`, or the environment variable `name` parsed as the default's type (or `kind`).

    Lists are comma-separated (`SEEDS=1,2,3`); "none" gives None; booleans are 1/true/yes or 0/false/no.
    A value that does not parse, a blank value and an empty list item (`SEEDS=1,,2`) are errors naming the
    variable, so a typo in a headless run fails at once instead of being ignored or read as the default.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    kind = kind or (type(default) if default is not None else str)

    def bad(why: str):
        return ValueError(f"environment variable {name}={raw!r} is not a valid {kind.__name__}: {why}; "
                          f"unset it for the default ({default!r}) or set it to 'none' for None")
    if not raw.strip():
        raise bad("it is blank")
    if raw.strip().lower() == "none":
        return None
    if kind is list:
        items = [v.strip() for v in raw.split(",")]
        if "" in items:
            raise bad(f"item {items.index('') + 1} of {len(items)} is empty (write e.g. 1,2,3)")
        return [_scalar(v) for v in items]
    if kind is bool:
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise bad(f"expected one of {sorted(_TRUE)} or {sorted(_FALSE)}")
        return word in _TRUE
    try:
        return kind(raw)
    except ValueError as err:
        raise bad(str(err)) from None


_TRUE, _FALSE = {"1", "true", "yes"}, {"0", "false", "no"}


def _scalar(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def study_configs(task: str, profile: str, models=None, datasets=None, seeds=None, results_dir=None,
                  data_dir=None, **overrides) -> list[RunConfig]:
    """The run configs of a task under a profile; any argument that is not None replaces the profile's.

    Results go to `results/<profile>` unless `results_dir` says otherwise, so profiles never mix.
    """
    if task not in PROFILES:
        raise ValueError(f"unknown task {task!r}; valid: {sorted(PROFILES)}")
    if profile not in PROFILES[task]:
        raise ValueError(f"unknown profile {profile!r}; valid: {sorted(PROFILES[task])}")
    spec = PROFILES[task][profile]
    if data_dir is None and spec["data_dir"] == "fixtures":
        data_dir = os.environ.get("FIXTURE_DATA_DIR", FIXTURE_DATA_DIR)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    configs = []
    for dataset in datasets or list(spec["runs"]):
        # an override can make two variants equal (e.g. one learning rate for both): each runs once
        variants = list({json.dumps(v := {**variant, **overrides}, sort_keys=True): v
                         for variant in spec["runs"][dataset]}.values())
        for model in models or _models_of(variants, spec):
            for variant in variants:
                variant = dict(variant)
                own_seeds = variant.pop("seeds", None)  # a variant may run fewer seeds (a stated budget cut)
                if model not in variant.pop("models", [model]):  # a variant may name its models
                    continue
                # seeds asked for replace the profile's, but a variant's own seeds (a stated cut) are never widened
                for seed in [s for s in seeds or own_seeds or spec["seeds"] if own_seeds is None or s in own_seeds]:
                    configs.append(RunConfig(
                        model_name=model, dataset=dataset, seed=seed, task=task,
                        data_dir=data_dir, results_dir=results_dir or f"results/{profile}",
                        **variant))
    return configs


def _models_of(variants, spec: dict) -> list[str]:
    """The models `variants` run, in order: a variant's own `models`, else the profile's."""
    return list(dict.fromkeys(m for v in variants for m in v.get("models", spec["models"])))


def models_run_on(task: str, profile: str, dataset: str) -> list[str]:
    """The models a profile trains on `dataset` (a variant may name its models; none when the dataset is cut)."""
    spec = PROFILES[task][profile]
    return _models_of(spec["runs"].get(dataset, []), spec)


def describe_setup(profile: str, configs: list[RunConfig]) -> str:
    """The first thing a reader sees: which profile, models, data and hardware produced this notebook."""
    data_dirs = sorted({os.path.relpath(resolve_data_dir(c.data_dir)) for c in configs})
    lines = [
        f"profile:  {profile}",
        f"models:   {', '.join(sorted({c.model_name for c in configs}))}",
        f"datasets: {', '.join(sorted({c.dataset for c in configs}))}",
        f"seeds:    {sorted({c.seed for c in configs})}   runs: {len(configs)}",
        f"data:     {', '.join(data_dirs)}" + ("  (small synthetic fixtures in the real formats)"
                                              if any("fixtures" in d for d in data_dirs) else ""),
        f"results:  {sorted({c.results_dir for c in configs})[0]}",
        f"precision: {', '.join(sorted({c.precision for c in configs}))}"
        + ("  (bf16 is emulated on this CPU: training here would be slow; finished runs are read as they are)"
           if any(emulates_bf16(c.resolved_precision) for c in configs) else ""),
        f"hardware: {describe_machine()}",
        f"versions: python {platform.python_version()}, torch {torch.__version__}",
    ]
    return "\n".join(lines)
