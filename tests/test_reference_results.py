"""The committed reference results and notebooks: complete, self-consistent, and what the notebooks show.

These read files in the repository (no training): a run folder whose summary disagrees with its own
metrics log, a missing seed, or a notebook committed from another profile fails here.
"""
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

import utils
from studykit import hardware as utils_hardware

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"


@pytest.mark.parametrize("task", ["task2", "task3"])
def test_every_reference_run_is_committed_and_consistent(task):
    # Matched on the settings, not the folder hash: the hash includes the data files' content, and the data
    # need not be on this machine to check the committed results.
    configs = utils.study_configs(task, "reference", results_dir=str(REFERENCE))
    results = utils.load_results(REFERENCE, task=task)
    assert len(results) == len(configs), f"{len(results)} of {len(configs)} {task} reference runs committed"
    keys = ["dataset", "model_name", "seed", "learning_rate", "adapter_size", "epochs", "batch_size", "max_length"]
    committed = {tuple(None if pd.isna(v) else v for v in row) for row in results[keys].itertuples(index=False)}
    for config in configs:
        assert tuple(getattr(config, k) for k in keys) in committed, f"missing reference run {config}"
    for run_dir in results["run_dir"]:
        run = Path(run_dir)
        summary = json.loads((run / "summary.json").read_text())
        log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        tests = [r for r in log if r["split"] == "test"]
        # selected on dev: the reported test row is the one at the evaluation with the best dev macro-F1
        reported = tests[-1]
        if "selected_step" in summary:
            dev = [r for r in log if r["split"] == "dev"]
            best = max(dev, key=lambda r: r["f1_macro"])
            assert summary["selected_step"] == best["step"] and summary["dev_f1_macro"] == best["f1_macro"]
            reported = next(r for r in tests if r["step"] == best["step"])
        assert summary["f1_macro"] == reported["f1_macro"] and summary["accuracy"] == reported["accuracy"]
        assert len(json.loads((run / "predictions.json").read_text())) == summary["eval_examples"]
        assert summary["steps"] > 0 and summary["hardware"]


@pytest.mark.parametrize("notebook", ["task2_finetune.ipynb", "task3_adapter.ipynb"])
def test_committed_notebooks_show_the_reference_profile(notebook):
    nb = nbformat.read(ROOT / notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "committed notebook is not fully executed"
    first = "".join(o.get("text", "") for o in code[1].outputs)
    assert "profile:  reference" in first and "all-minilm-l6-v2, all-mpnet-base-v2" in first  # both sizes
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("has_bf16", [True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
@pytest.mark.parametrize("task", ["task2", "task3"])
def test_reference_notebooks_find_their_runs_on_the_real_data(task, has_bf16, real_data, monkeypatch):
    # Re-executing a notebook on PROFILE=reference with the real data must reuse the committed runs, not
    # retrain, on any CPU: every config's folder (named by its hash, which covers the data's content) holds a
    # summary, whether or not this CPU has native bf16 (the other kind is pretended).
    monkeypatch.setattr(utils_hardware, "_cpu_bf16_features", lambda: ("AMX",) if has_bf16 else ())
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    configs = utils.study_configs(task, "reference", results_dir=str(REFERENCE), data_dir=real_data)
    missing = [str(c.run_dir.relative_to(REFERENCE)) for c in configs if not (c.run_dir / "summary.json").is_file()]
    assert not missing, f"reference runs not found under their config hash: {missing}"


def test_committed_memory_notebook_shows_its_reference_validation():
    # Executed on the reference profile, the notebook recomputes its tables (the fast profile reads results/memory/):
    # the validation CSV it wrote and its text must agree, and every case be within the stated tolerance.
    from studykit.memory import TOTAL_TOLERANCE
    nb = nbformat.read(ROOT / "memory_estimate.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "committed notebook is not fully executed"
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "profile: reference" in text
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    validation = pd.read_csv(REFERENCE / "memory" / "validation.csv")
    assert len(validation) >= 14 and validation["err_pct"].abs().max() < 100 * TOTAL_TOLERANCE
    assert (f"{len(validation)} cases on {validation.model.nunique()} architectures: largest error "
            f"{validation['err_pct'].abs().max():.3f} %") in text


def test_parity_runs_of_both_precisions_are_committed(real_data):
    # bench/parity.py compares these: the parity profile's runs, once in fp32 and once in bf16, paired by seed
    # (matched by config hash, which covers the data's content: so this needs the real data).
    from bench.parity import parity_runs
    runs = parity_runs(ROOT / "results" / "parity", data_dir=real_data)
    both_tasks = sum(len(utils.study_configs(t, "parity")) for t in ("task2", "task3"))
    assert runs.groupby("arm").size().to_dict() == {"bf16": both_tasks, "fp32": both_tasks}
    assert set(runs.loc[runs.arm == "bf16", "precision"]) == {"bf16"}
    assert set(runs.loc[runs.arm == "fp32", "precision"]) <= {"fp32", "no"}
