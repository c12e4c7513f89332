"""The results frame's method and label columns, loading several profiles' runs, the independent-samples
comparison of two models, the two-size comparison of Task 3, and the sentences they give (synthetic tables and
run folders; the committed runs where the real data is here)."""
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import utils
from studykit.results import recorded_method

ROOT = Path(__file__).resolve().parent.parent


# --- the results frame: method and label -------------------------------------------------------------------

def _finish(config, f1, summary=None):
    from studykit.runs import RunFolder
    folder = RunFolder.for_config(config)
    folder.write_config(config)
    log = [{"step": 1, "epoch": 1.0, "split": "test", "f1_macro": f1, "accuracy": f1}]
    folder.write_finished(log, [0] * 48, {"f1_macro": f1, "accuracy": f1, "eval_loss": 1.0, "hardware": "cpu",
                                          "train_time_s": 1.0, "status": "finished", **(summary or {})})


def test_the_frame_keeps_the_method_and_a_separate_label(fixture_data, tmp_path):
    kw = dict(model_name="tiny-bert", dataset="restaurant_sup", data_dir=fixture_data, results_dir=str(tmp_path))
    _finish(utils.RunConfig(**kw), 0.5)
    _finish(utils.RunConfig(**kw, adapter_size=8, task="task3"), 0.4)
    _finish(utils.RunConfig(**kw, method="lora", task="task3", learning_rate=2e-3), 0.3)
    results = utils.load_results(tmp_path).set_index("f1_macro")
    assert results["training_method"].to_dict() == {0.5: "full", 0.4: "adapter", 0.3: "lora"}
    assert results["label"].to_dict() == {0.5: "tiny-bert full lr=1e-05", 0.4: "tiny-bert adapter8 lr=1e-05",
                                          0.3: "tiny-bert lora8 lr=0.002"}
    assert "method" not in results  # the config's own field (None where implied) is spelled out as training_method
    metrics = utils.load_metrics(tmp_path)
    assert set(zip(metrics["training_method"], metrics["label"])) == set(zip(results["training_method"], results["label"]))


def test_the_method_recorded_in_the_summary_is_the_one_used():
    config = {"model_name": "m", "dataset": "restaurant_sup", "adapter_size": 8}
    assert recorded_method(config) == "adapter"  # a run from before summaries recorded it: RunConfig.method_name
    assert recorded_method(config, {"training_method": "lora"}) == "lora"  # what the engine recorded wins


def test_load_study_reads_each_profiles_folder_and_names_the_missing_cells(fixture_data, tmp_path):
    one = [utils.RunConfig(model_name="tiny-bert", dataset="restaurant_sup", data_dir=fixture_data, seed=s,
                           results_dir=str(tmp_path / "a")) for s in (1, 2)]
    two = [utils.RunConfig(model_name="tiny-roberta", dataset=d, data_dir=fixture_data, seed=s,
                           results_dir=str(tmp_path / "b")) for d in ("restaurant_sup", "acl_sup") for s in (1, 2, 3)]
    for config in one + two[:2]:
        _finish(config, 0.5)
    runs = utils.load_study(one + two)
    assert len(runs) == 4 and set(runs["model_name"]) == {"tiny-bert", "tiny-roberta"}
    assert utils.missing_cells(runs.attrs["missing_configs"]) == [
        "tiny-roberta, full (lr 1e-05), acl_sup: seeds 1, 2, 3 not finished",
        "tiny-roberta, full (lr 1e-05), restaurant_sup: seed 3 not finished"]
    assert utils.load_study([]).empty


# --- two models: independent samples -----------------------------------------------------------------------

def test_independent_comparison_is_welch_and_counts_every_pair():
    a, b = [0.60, 0.64, 0.62, 0.66, 0.61], [0.70, 0.66, 0.73, 0.69]
    out = utils.independent_comparison(a, b)
    welch = stats.ttest_ind(b, a, equal_var=False)
    assert out["ci95"] == pytest.approx(tuple(welch.confidence_interval(0.95)))
    assert out["p_value"] == pytest.approx(welch.pvalue) and out["df"] == pytest.approx(welch.df)
    wins = sum((y > x) + 0.5 * (y == x) for x, y in itertools.product(a, b))
    assert out["pairs"] == 20 and out["prob_b_beats_a"] == pytest.approx(wins / 20) == pytest.approx(0.975)  # one tie counts half
    assert (out["n_a"], out["n_b"]) == (5, 4) and out["verdict"].startswith("higher beyond seed noise")
    assert utils.independent_comparison(a, b[::-1])["ci95"] == pytest.approx(out["ci95"])  # no pairing: the order is irrelevant
    few = utils.independent_comparison(a, b[:1])
    assert few["verdict"] == "too few seeds to decide" and few["pairs"] == 5 and np.isnan(few["ci95"][0])
    assert "all 25 pairs of runs" in utils.what_seeds_decide(5, paired=False)
    assert "share the data order only" in utils.what_seeds_decide(5, paired=False)


def _full_runs(model, values, dataset="restaurant_sup", params=100, method="full", lr=5e-5, seeds=None):
    return pd.DataFrame([{"dataset": dataset, "model_name": model, "training_method": method,
                          "label": f"{model} {method} lr={lr:g}", "seed": s, "f1_macro": v, "accuracy": v,
                          "total_params": params} for s, v in zip(seeds or itertools.count(1), values)])


def test_compare_models_orders_by_size_and_names_what_is_missing():
    runs = pd.concat([_full_runs("big", [0.72, 0.74, 0.73], params=110), _full_runs("small", [0.64, 0.66, 0.65, 0.63], params=22),
                      _full_runs("small", [0.3, 0.31], dataset="acl_sup", params=22)], ignore_index=True)
    table = utils.compare_models(runs)
    assert len(table) == 1  # acl has one model only
    row = table.iloc[0]
    assert (row["model a"], row["model b"], row["n a"], row["n b"]) == ("small", "big", 4, 3)
    assert row["difference"] == pytest.approx(0.73 - 0.645) and row["P(b beats a)"] == 1.0 and row["pairs"] == 12
    missing = [utils.RunConfig(model_name="big", dataset="acl_sup", seed=s) for s in (1, 2)]
    lines = utils.describe_model_comparisons(table, missing_configs=missing)
    assert lines[0].startswith("restaurant_sup, big vs small (full fine-tuning): macro-F1 0.730 (3 seeds) vs 0.645 (4 seeds)")
    assert "in 100% of the 12 pairs" in lines[0] and "not pairs" in lines[0]
    assert lines[1] == ("The model comparison still lacks: big, full (lr 1e-05), acl_sup: seeds 1, 2 not finished "
                        "(those cells are left out above, never estimated).")
    adapters = _full_runs("big", [0.1] * 3, method="adapter", params=110)
    assert len(utils.compare_models(pd.concat([runs, adapters], ignore_index=True))) == 1  # full fine-tuning only
    assert utils.compare_models(runs.iloc[:0]).empty


def test_per_class_differences_between_models():
    scores = pd.concat([_full_runs(m, v, params=p).assign(**{"class": c, "f1": v, "support": 10})
                        for m, p, c, v in [("small", 1, "pos", [0.8, 0.82, 0.81]), ("big", 2, "pos", [0.9, 0.91, 0.92]),
                                           ("small", 1, "neg", [0.5, 0.7, 0.6]), ("big", 2, "neg", [0.6, 0.5, 0.7])]],
                       ignore_index=True)
    table = utils.compare_models_per_class(scores)
    assert table["class"].tolist() == ["pos", "neg"] and table["test support"].tolist() == [10, 10]
    lines = utils.describe_class_differences(table)
    pos = table.iloc[0]
    assert pos["Welch low"] > 0 and not table.iloc[1]["Welch low"] > 0  # pos differs beyond noise, neg does not
    assert lines == [f"restaurant_sup, per class, big vs small: pos 0.910 vs 0.810 (difference +0.100, Welch "
                     f"[{pos['Welch low']:+.3f}, {pos['Welch high']:+.3f}]); the other 1 class not decided by these seeds."]


# --- Task 3 at two sizes -----------------------------------------------------------------------------------

def test_compare_sizes_compares_the_gap_to_full_fine_tuning_across_models():
    small = pd.concat([_full_runs("small", [0.60, 0.62, 0.61], params=22),
                       _full_runs("small", [0.50, 0.51, 0.53], params=22, method="adapter", lr=1e-3),
                       _full_runs("small", [0.9], params=22, method="adapter", lr=5e-4)], ignore_index=True)  # a 1-seed check
    big = pd.concat([_full_runs("big", [0.70, 0.72, 0.71], params=110),
                     _full_runs("big", [0.69, 0.72, 0.70], params=110, method="adapter", lr=1e-3)], ignore_index=True)
    table = utils.compare_sizes(pd.concat([small, big], ignore_index=True))
    row = table.iloc[0]
    assert (row["training_method"], row["model a"], row["model b"]) == ("adapter", "small", "big")
    assert row["gap a"] == pytest.approx(-0.0967, abs=1e-4) and row["gap b"] == pytest.approx(-0.0067, abs=1e-4)
    welch = stats.ttest_ind([-0.01, 0.0, -0.01], [-0.10, -0.11, -0.08], equal_var=False).confidence_interval(0.95)
    assert (row["Welch low"], row["Welch high"]) == pytest.approx((welch.low, welch.high))
    lines = utils.describe_sizes(pd.concat([small, big], ignore_index=True))
    assert lines[0].startswith("restaurant_sup, adapter minus full fine-tuning (macro-F1): -0.097 at small (3 seeds), "
                               "-0.007 at big (3 seeds); the gap changes by +0.090")
    only_small = utils.describe_sizes(small, missing_configs=[utils.RunConfig(model_name="big", dataset="acl_sup",
                                                                               adapter_size=64, learning_rate=1e-3)])
    assert only_small[0] == ("The gap to full fine-tuning at two model sizes cannot be compared yet: it needs two "
                             "models with full fine-tuning and another method on one dataset; these runs have "
                             "small: adapter, full.")
    assert only_small[1] == "The two-size comparison still lacks: big, adapter (lr 0.001), acl_sup: seed 1 not finished."
    # one model only, its own runs missing: no two-size comparison is planned, so none is said to lack them
    one_model = utils.describe_sizes(small, missing_configs=[utils.RunConfig(model_name="small", dataset="acl_sup")])
    assert len(one_model) == 1 and one_model[0].startswith("The gap to full fine-tuning at two model sizes cannot")


# --- the committed runs: MiniLM beside MPNet-base (the reference profile) -----------------------------------

def test_the_committed_runs_compare_two_models_on_restaurant(real_data):
    configs = utils.study_configs("task2", "reference", data_dir=real_data, results_dir=str(ROOT / "results" / "reference"))
    runs = utils.load_study(configs)
    table = utils.compare_models(runs).set_index("dataset")
    assert {"restaurant_sup", "acl_sup"} <= set(table.index)  # AG News has one model: nothing to compare
    row = table.loc["restaurant_sup"]
    assert (row["model a"], row["model b"]) == ("all-minilm-l6-v2", "all-mpnet-base-v2")
    assert row["n a"] == 5 and row["n b"] == 5 and row["pairs"] == row["n a"] * row["n b"]
    minilm = runs.loc[(runs.model_name == "all-minilm-l6-v2") & (runs.dataset == "restaurant_sup"), "f1_macro"]
    mpnet = runs.loc[(runs.model_name == "all-mpnet-base-v2") & (runs.dataset == "restaurant_sup"), "f1_macro"]
    assert row["Welch low"] == pytest.approx(stats.ttest_ind(mpnet, minilm, equal_var=False).confidence_interval().low)
    missing = utils.missing_cells(runs.attrs["missing_configs"])
    assert not [m for m in missing if m.startswith("all-mpnet-base-v2, full")]  # both of its Task 2 cells landed


# --- the reporting layers ------------------------------------------------------------------------------------

REPORTING = {"results": 0, "statistics": 1, "analysis": 2, "costs": 2, "findings": 3, "summary": 3, "claims": 3,
             "plots": 3}


def test_reporting_layers_point_one_way():
    import ast
    for name, rank in REPORTING.items():
        source = (ROOT / "studykit" / f"{name}.py").read_text()
        assert len(source.splitlines()) <= 420, f"{name}.py has grown past a module of one job"
        imported = {node.module.split(".")[0] for node in ast.walk(ast.parse(source))
                    if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}
        assert not imported & {"grid", "sweep", "training"}, f"{name}.py imports the engine: {imported}"
        upward = {m for m in imported if m in REPORTING and REPORTING[m] >= rank}
        assert not upward, f"{name}.py imports {upward}, which are on its layer or above it"
        # the training method is read from the runs (recorded_method), never derived again from adapter_size
        assert '"adapter" if' not in source and 'else "full"' not in source, name


def test_training_memory_measures_each_method_by_its_recorded_name(tmp_path):
    rows = [{"dataset": "restaurant_sup", "label": f"tiny-bert {m}", "training_method": m, "model_name": "tiny-bert",
             "batch_size": 4, "gradient_accumulation": 1, "num_processes": 1, "results_dir": str(tmp_path),
             "adapter_size": 8 if m == "adapter" else None, "lora_rank": 8 if m == "lora" else None,
             "peak_memory_kind": "process peak RSS", "peak_memory_bytes": 1.0} for m in ("full", "adapter", "lora")]
    memory = utils.training_memory(pd.DataFrame(rows), {"restaurant_sup": 16})["total"]
    assert memory["restaurant_sup", "tiny-bert lora"] < memory["restaurant_sup", "tiny-bert full"]
    assert memory["restaurant_sup", "tiny-bert adapter"] < memory["restaurant_sup", "tiny-bert full"]


def test_compared_configs_leave_out_the_cells_the_grid_runs(fixture_data):
    ours = utils.study_configs("task2", "fast", models=["tiny-bert"], data_dir=fixture_data)
    others = utils.compared_configs("task2", ["fast"], ours, data_dir=fixture_data)
    assert {c.model_name for c in others} == {"tiny-roberta"} and len(others) == len(ours)
    assert utils.compared_configs(("task2", "task3"), [], ours) == []
    both_tasks = utils.compared_configs(("task2", "task3"), ["fast"], ours, data_dir=fixture_data)
    assert {c.task for c in both_tasks} == {"task2", "task3"}
    # the grid's own model on a dataset the grid leaves out (AG News, cut from the reference study) is read too
    restaurant_only = [c for c in ours if c.dataset == "restaurant_sup"]
    read = utils.compared_configs("task2", ["fast"], restaurant_only, data_dir=fixture_data)
    assert {(c.model_name, c.dataset) for c in read if c.model_name == "tiny-bert"} == {
        ("tiny-bert", "acl_sup"), ("tiny-bert", "agnews_sup")}


def test_describe_model_costs_gives_the_larger_models_cost_as_ratios():
    runs = pd.concat([_full_runs("small", [0.6, 0.62], params=22_000_000), _full_runs("big", [0.7, 0.72], params=110_000_000)],
                     ignore_index=True).assign(
        trainable_params=lambda f: f.total_params, checkpoint_bytes=lambda f: f.total_params * 4.0,
        train_time_s=lambda f: np.where(f.model_name == "big", 600.0, 100.0), epochs_run=2, time_per_epoch_s=1.0,
        train_samples_per_s=1.0, peak_memory_bytes=lambda f: np.where(f.model_name == "big", 6e9, 2e9))
    assert utils.describe_model_costs(runs) == [
        "restaurant_sup, big vs small (full fine-tuning): 110,000,000 vs 22,000,000 parameters; 300 vs 50 s per "
        "training epoch (6.0x); checkpoint 440 vs 88 MB; process peak RSS 6.00 vs 2.00 GB."]
    assert utils.describe_model_costs(runs[runs.model_name == "big"]) == []
    labels = runs.groupby("model_name")["label"].first()
    step = pd.DataFrame({"dataset": "restaurant_sup", "label": [labels["small"], labels["big"]], "total": [1.26e9, 3.71e9],
                         "source": "measured step"}).set_index(["dataset", "label"])
    assert utils.describe_model_costs(runs, step)[0].endswith(
        "checkpoint 440 vs 88 MB; training step peak 3.71 vs 1.26 GB (2.9x; measured step); process peak RSS 6.00 vs 2.00 GB.")
