"""Per-class analysis, runs selected by config, statistics and the generated findings, on small synthetic
results (fixture data for the gold labels; no training)."""
import json
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import f1_score

import utils

matplotlib.use("Agg")


def _config(fixture_data, tmp_path, **kw):
    return utils.RunConfig(model_name="tiny-bert", dataset="restaurant_sup", data_dir=fixture_data,
                           results_dir=str(tmp_path), **kw)


def _row(config, run_dir, **extra):
    return {"config_hash": config.config_hash(), "seed": config.seed, "run_dir": str(run_dir),
            "dataset": config.dataset, "label": "m", "training_method": "full", "f1_macro": 0.5, **extra}


# --- selection by config ----------------------------------------------------------------------------------------

def test_select_runs_keeps_exactly_the_configs_and_lists_the_missing(fixture_data, tmp_path):
    wanted = [_config(fixture_data, tmp_path, seed=s) for s in (1, 2)]
    other = _config(fixture_data, tmp_path, seed=1, epochs=1)  # same label-ish run, other settings
    results = pd.DataFrame([_row(wanted[0], tmp_path / "a/seed1"), _row(other, tmp_path / "b/seed1")])
    chosen = utils.select_runs(results, wanted)
    assert chosen["run_dir"].tolist() == [str(tmp_path / "a/seed1")]
    assert chosen.attrs["missing"] == [str(wanted[1].run_dir)]


def test_duplicate_seeds_are_named_and_never_averaged(fixture_data, tmp_path):
    config = _config(fixture_data, tmp_path)
    results = pd.DataFrame([_row(config, tmp_path / "x/seed1", f1_macro=0.2),
                            _row(config, tmp_path / "y/seed1", f1_macro=0.8)])
    with pytest.warns(utils.DuplicateSeedWarning, match=r"x/seed1.*y/seed1"):
        chosen = utils.select_runs(results, [config])
    assert len(chosen) == 1 and chosen["f1_macro"].iloc[0] == 0.2  # the first folder, not the mean 0.5
    with pytest.raises(ValueError, match="never averaged.*x/seed1"):
        utils.select_runs(results, [config], on_duplicate="error")
    assert len(utils.duplicate_seeds(results)) == 2


def test_select_runs_without_duplicates_warns_nothing(fixture_data, tmp_path):
    config = _config(fixture_data, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(utils.select_runs(pd.DataFrame([_row(config, tmp_path / "x/seed1")]), [config])) == 1
    assert utils.select_runs(pd.DataFrame(), [config]).attrs["missing"] == [str(config.run_dir)]


# --- per class ----------------------------------------------------------------------------------------------------

def _runs_with_predictions(tmp_path, fixture_data):
    gold, names = utils.test_labels("restaurant_sup", fixture_data)
    runs = []
    for seed, pred in [(1, gold), (2, np.zeros_like(gold)), (3, np.where(gold == 1, 0, gold))]:
        folder = tmp_path / f"run{seed}"
        folder.mkdir()
        (folder / "predictions.json").write_text(json.dumps([int(p) for p in pred]))
        runs.append({"dataset": "restaurant_sup", "label": "full lr=1", "training_method": "full",
                     "seed": seed, "run_dir": str(folder)})
    return pd.DataFrame(runs), gold, names


def test_per_class_scores_match_sklearn_and_count_predictions(tmp_path, fixture_data):
    results, gold, names = _runs_with_predictions(tmp_path, fixture_data)
    scores = utils.per_class_scores(results, fixture_data)
    assert len(scores) == 3 * len(names)
    perfect = scores[scores.seed == 1].set_index("class")
    assert (perfect["f1"] == 1).all() and perfect["support"].tolist() == np.bincount(gold).tolist()
    third = scores[scores.seed == 3].set_index("class")["f1"]
    pred3 = np.where(gold == 1, 0, gold)
    assert third.tolist() == pytest.approx(f1_score(gold, pred3, average=None, labels=[0, 1, 2], zero_division=0))
    table = utils.per_class_table(scores)
    assert table.index.get_level_values("class").tolist() == names  # the dataset's class order
    assert table.loc[("restaurant_sup", "positive"), "full lr=1"] == pytest.approx(
        scores[scores["class"] == "positive"]["f1"].mean())


def test_never_predicted_names_classes_seeds_and_single_class_runs(tmp_path, fixture_data):
    results, _, _ = _runs_with_predictions(tmp_path, fixture_data)
    missing = utils.never_predicted(utils.per_class_scores(results, fixture_data))
    row = missing.loc[("restaurant_sup", "full lr=1")]
    assert row["runs missing a class"] == 2
    assert row["classes never predicted (seeds)"] == "neutral (seeds 2, 3); negative (seed 2)"
    assert row["runs predicting one class only"] == "seed 2: only positive"
    text = utils.describe_collapse(missing)[0]
    assert "2 of 3 runs never predict" in text and "seed 2: only positive" in text


def test_confusion_matrices_are_the_mean_over_seeds(tmp_path, fixture_data):
    results, gold, names = _runs_with_predictions(tmp_path, fixture_data)
    matrices = utils.confusion_matrices(results, fixture_data)
    matrix = matrices[("restaurant_sup", "full lr=1")]
    assert list(matrix.index) == names and matrix.attrs["seeds"] == 3
    assert matrix.to_numpy().sum() == pytest.approx(len(gold))
    # gold positive is predicted positive by all three runs
    assert matrix.loc["positive", "positive"] == pytest.approx((gold == 0).sum())
    assert matrix.loc["neutral", "positive"] == pytest.approx(2 / 3 * (gold == 1).sum())
    utils.plot_confusions(matrices)


def test_predictions_of_other_data_are_an_error(tmp_path, fixture_data):
    results, _, _ = _runs_with_predictions(tmp_path, fixture_data)
    (tmp_path / "run1" / "predictions.json").write_text("[0, 1]")
    with pytest.raises(ValueError, match="2 predictions for 48 test examples"):
        utils.per_class_scores(results, fixture_data)


def test_class_balance_keeps_whole_names():
    audits = [{"dataset": "acl_sup", "train_labels": {"CompareOrContrast": 3, "Background": 1},
               "test_labels": {"CompareOrContrast": 1, "Background": 1}}]
    balance = utils.class_balance(audits)
    assert list(balance.index.get_level_values("class")) == ["CompareOrContrast", "Background"]
    assert balance.loc[("acl_sup", "CompareOrContrast"), "train %"] == 75.0
    assert balance.loc[("acl_sup", "Background"), "test %"] == 50.0


def test_majority_level_is_the_macro_f1_of_the_constant_predictor(fixture_data):
    gold, names = utils.test_labels("restaurant_sup", fixture_data)
    constant = np.full_like(gold, np.bincount(gold).argmax())
    expected = f1_score(gold, constant, average="macro", labels=list(range(len(names))), zero_division=0)
    assert utils.majority_level("restaurant_sup", fixture_data) == pytest.approx(expected)


# --- statistics ---------------------------------------------------------------------------------------------------

def _paired(a, b, dataset="d"):
    rows = [{"dataset": dataset, "model_name": "x", "label": "full", "training_method": "full", "seed": s,
             "f1_macro": v} for s, v in enumerate(a, 1)]
    rows += [{"dataset": dataset, "model_name": "x", "label": "adapter", "training_method": "adapter", "seed": s,
              "f1_macro": v} for s, v in enumerate(b, 1)]
    return pd.DataFrame(rows)


def test_wilcoxon_floor_and_what_seeds_decide():
    assert utils.min_wilcoxon_p(5) == 0.0625 and utils.min_wilcoxon_p(3) == 0.25
    assert stats.wilcoxon([1, 2, 3, 4, 5], method="exact").pvalue == pytest.approx(utils.min_wilcoxon_p(5))
    text = utils.what_seeds_decide(5)
    assert "p = 0.0625" in text and "cannot reach 0.05" in text and f"±{stats.t.ppf(0.975, 4):.2f}" in text
    assert "can reach 0.05" in utils.what_seeds_decide(6)


def test_paired_comparison_uses_scipy():
    frame = _paired([0.60, 0.62, 0.61, 0.63, 0.64], [0.50, 0.55, 0.52, 0.58, 0.51])
    out = utils.paired_comparison(frame, "full", "adapter")
    diff = np.array([0.50, 0.55, 0.52, 0.58, 0.51]) - np.array([0.60, 0.62, 0.61, 0.63, 0.64])
    assert out["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diff, method="exact").pvalue) == 0.0625
    assert out["b_wins"] == 0 and out["b_losses"] == 5
    low, high = out["bootstrap_ci95"]
    assert diff.min() <= low < high <= diff.max()


def test_compare_methods_and_findings_sentences():
    frame = _paired([0.60, 0.62, 0.61], [0.40, 0.45, 0.42])
    table = utils.compare_methods(frame)
    row = table.iloc[0]
    assert row["label"] == "adapter" and row["baseline"] == "full" and row["seeds lost"] == 3
    assert row["difference"] == pytest.approx(np.mean([-0.20, -0.17, -0.19]))
    sentence = utils.describe_comparisons(table)[0]
    assert "difference -0.187" in sentence and "lower in 3 of 3 seeds" in sentence
    assert "excludes 0" in sentence  # -0.187 with a small spread is beyond noise even over 3 seeds
    runs = frame.assign(trainable_params=lambda f: np.where(f.training_method == "full", 100, 10), total_params=100,
                        checkpoint_bytes=lambda f: f.trainable_params * 4e4, train_time_s=lambda f: np.where(
                            f.training_method == "full", 200.0, 100.0), epochs_run=2, time_per_epoch_s=120.0,
                        train_samples_per_s=10.0)
    costs = utils.method_costs(runs)
    assert costs.loc[("d", "adapter"), "trainable %"] == 10.0 and costs.loc[("d", "full"), "checkpoint_MB"] == 4.0
    findings = utils.task3_findings(table, costs, sizes=["two sizes"]) + utils.describe_method_costs(costs)
    assert "below in every seed on 1 of 1" in findings[0] and "within 0.05 of full fine-tuning on 0 of 1" in findings[0]
    assert "higher in 0, lower in 3 of 3 seeds" in findings[0]
    assert "adapter 10.0 %" in findings[1] and "full 100.0 %" in findings[1]
    assert findings[3] == ("d, adapter: 10.0 % of the weights trained, checkpoint 0.4 MB, 50 s per training epoch vs "
                           "100 s for full fine-tuning (50%).")
    memory = pd.DataFrame({"total": [30.0, 120.0]}, index=pd.MultiIndex.from_tuples(
        [("d", "adapter"), ("d", "full")], names=["dataset", "label"]))
    assert utils.describe_method_costs(costs, memory)[0].endswith("training step memory 25% of full fine-tuning's.")
    assert findings[2] == "two sizes"
    missing = pd.DataFrame([{"dataset": "d", "label": "adapter", "runs": 3, "runs missing a class": 0}]).set_index(
        ["dataset", "label"])
    answers = utils.task3_answers(table, costs, memory, missing, ["two sizes"])
    assert answers[:2] == findings[:2] and answers[2].endswith("25% of full fine-tuning's.")
    assert answers[3:] == ["Every run predicts every class at least once.", "two sizes", utils.what_seeds_decide(3)]
    assert "nothing to compare" in utils.task3_findings(utils.compare_methods(frame[frame.label == "full"]))[0]


def test_task2_findings_name_the_single_model_and_the_lost_classes():
    results = pd.DataFrame([{"dataset": "acl_sup", "model_name": "m", "label": "m full", "training_method": "full",
                             "seed": s, "f1_macro": f, "accuracy": 0.6} for s, f in [(1, 0.3), (2, 0.32)]])
    missing = pd.DataFrame([{"dataset": "acl_sup", "label": "m full", "runs": 2, "runs missing a class": 2,
                             "classes never predicted (seeds)": "Future (seeds 1, 2)"}]).set_index(["dataset", "label"])
    lines = utils.task2_findings(results, missing)
    assert lines[0].startswith("Only one model ran (m)")
    assert "reaches test macro-F1 0.310 (accuracy 0.600)" in lines[1]
    assert "in 2 of 2 runs it never predicts Future (seeds 1, 2)" in lines[1]
    two = pd.concat([results, results.assign(model_name="n", label="n full", f1_macro=[0.5, 0.52])])
    lines = utils.task2_findings(two, missing.iloc[:0])
    assert lines[0] == ("acl_sup: best n full (0.510 macro-F1) ahead of m full (0.310) (two models: compared as "
                        "independent samples below).")
    assert lines[1].startswith("acl_sup, n vs m (full fine-tuning): macro-F1 0.510 (2 seeds) vs 0.310 (2 seeds); "
                               "difference +0.200, Welch 95 % interval")
    assert "beats a random m run in 100% of the 4 pairs" in lines[1] and "higher beyond seed noise" in lines[1]
    assert len(lines) == 2  # nothing missing: no line naming missing cells


# --- curves -------------------------------------------------------------------------------------------------------

def _curve(seed, values, method="adapter", dataset="d"):
    return pd.DataFrame({"dataset": dataset, "label": method, "training_method": method, "seed": seed,
                         "split": "test", "step": range(1, len(values) + 1),
                         "epoch": np.arange(1, len(values) + 1) / 2, "f1_macro": values})


def test_curve_facts_measure_time_at_majority_level_and_the_last_epoch_gain():
    metrics = pd.concat([_curve(1, [0.1, 0.1, 0.1, 0.3, 0.4, 0.5]), _curve(2, [0.1] * 6)])
    facts = utils.curve_facts(metrics, {"d": 0.1}).set_index("seed")
    assert facts.loc[1, "epochs at majority level"] == 1.5 and not facts.loc[1, "never left majority level"]
    assert facts.loc[2, "never left majority level"] and facts.loc[2, "epochs at majority level"] == 3.0
    assert facts.loc[1, "last-epoch gain"] == pytest.approx(0.45 - 0.2)  # mean of last epoch minus the one before
    text = utils.describe_curve_facts(facts.reset_index())[0]
    assert "majority-class level (0.100) for 1.5–3.0 of 3.0 epochs trained" in text
    assert "never left it in 1 of 2 seeds" in text and "rising in 1 of 2 seeds" in text
    early = utils.describe_curve_facts(utils.curve_facts(_curve(1, [0.3, 0.4, 0.5]), {"d": 0.1}))[0]
    assert "above the majority-class level (0.100) from the first evaluation" in early


def test_plot_curves_colours_by_method_names_metrics_and_has_a_legend_per_panel():
    metrics = pd.concat([_curve(1, [0.1, 0.2], "full", "a"), _curve(1, [0.1, 0.3], "adapter", "a"),
                         _curve(1, [0.2, 0.4], "full", "b")])
    fig = utils.plot_curves(metrics, "f1_macro", levels={"a": 0.1, "b": 0.1})
    colours = utils.method_colours({"full": "full", "adapter": "adapter"})
    for ax in fig.axes:
        assert ax.get_legend() is not None and ax.get_title().startswith("Test macro-F1")
        for line in ax.get_lines():
            if line.get_label().startswith("full"):
                assert line.get_color() == colours["full"]
    assert colours["full"][2] > colours["full"][0] and colours["adapter"][0] > colours["adapter"][2]  # blue, orange
    dev = utils.plot_curves(metrics.assign(split="dev"), "f1_macro", split="dev")
    assert all(ax.get_title().startswith("Dev macro-F1") for ax in dev.axes)


def test_plot_curves_tells_two_models_apart_by_line_style_and_keeps_one_model_solid():
    small = pd.concat([_curve(1, [0.1, 0.2], "full", "a"), _curve(1, [0.1, 0.3], "adapter", "a")]).assign(model_name="small")
    big = small.assign(model_name="big", label=lambda f: "big " + f["label"])
    styles = {line.get_label().split(" (")[0]: line.get_linestyle()
              for line in utils.plot_curves(pd.concat([small, big]), "f1_macro").axes[0].get_lines()}
    assert styles == {"full": "--", "adapter": "--", "big full": "-", "big adapter": "-"}  # by name: big, then small
    assert {line.get_linestyle() for line in utils.plot_curves(small, "f1_macro").axes[0].get_lines()} == {"-"}


# --- what ran, and the settings -----------------------------------------------------------------------------------

def test_settings_beside_report_gives_a_reason_for_each_difference():
    table = utils.settings_beside_report("task2", "reference")
    assert table.loc["max_length", "why"] == "same"
    assert "under-trains" in table.loc["learning_rate", "why"]
    assert table.loc["epochs", "report (full profile)"] == "restaurant 4 / acl 4 / agnews 5"
    assert all(table["why"] != "")


def test_what_ran_and_what_did_not():
    results = pd.DataFrame([{"model_name": "m", "training_method": "full", "dataset": "d", "label": "x",
                             "seed": s, "hardware": "cpu", "precision": "no"} for s in (1, 2, 3)])
    assert "3 runs: m; methods full" in utils.what_ran(results) and "precision fp32" in utils.what_ran(results)
    missing = utils.what_did_not_run(results, "task3", "reference")
    assert any("full profile" in m for m in missing) and any("LoRA" in m for m in missing)
    assert not any("LoRA" in m for m in utils.what_did_not_run(results, "task2", "reference"))  # a Task 3 method
    # the stated cut, named with the model it cuts (AG News runs at the small size only)
    assert "agnews_sup: left out of the reference profile's study for all-mpnet-base-v2 (a stated budget cut; the " \
           "reason is in studykit/profiles.py)" in missing
    # runs of a cut cell read from another profile are named as read, not as missing
    with_agnews = pd.concat([results, results.assign(dataset="agnews_sup", model_name="all-mpnet-base-v2")])
    cut = [m for m in utils.what_did_not_run(with_agnews, "task2", "reference") if m.startswith("agnews_sup")]
    assert cut == ["agnews_sup: left out of the reference profile's own grid for all-mpnet-base-v2 (a stated budget "
                   "cut; the reason is in studykit/profiles.py); read here from another profile's runs: all-mpnet-base-v2"]
    assert any("x on d has 3" in m for m in missing)
    box = utils.summary_box("S", utils.what_ran(results), missing, ["f"])
    assert box.startswith("### S") and "- f" in box


def test_a_dataset_cut_for_one_model_of_the_profile_is_named_with_that_model(monkeypatch):
    from studykit import profiles
    spec = dict(profiles.PROFILES["task2"]["fast"], models=["small", "base"])
    spec["runs"] = {"restaurant_sup": [dict(epochs=1)], "acl_sup": [dict(epochs=1)],
                    "agnews_sup": [dict(epochs=1, models=["small"])]}   # AG News at the small size only
    monkeypatch.setitem(profiles.PROFILES["task2"], "fast", spec)
    assert utils.models_run_on("task2", "fast", "agnews_sup") == ["small"]
    results = pd.DataFrame([{"model_name": m, "training_method": "full", "dataset": d, "label": m, "seed": 1,
                             "hardware": "cpu", "precision": "no"} for m in ("small", "base")
                            for d in ("restaurant_sup", "acl_sup")])
    cut = [m for m in utils.what_did_not_run(results, "task2", "fast") if "left out" in m]
    assert cut == ["agnews_sup: left out of the fast profile's study for base (a stated budget cut; the reason is in "
                   "studykit/profiles.py)"]


def test_describe_budgets_names_a_full_baseline_selected_in_its_last_epoch_against_longer_budgets():
    def runs(model, method, budget, selected):
        return [{"dataset": "acl_sup", "model_name": model, "training_method": method, "epochs": budget,
                 "selected_epoch": e, "seed": s} for s, e in enumerate(selected, 1)]
    table = pd.DataFrame(runs("big", "full", 5, [4.5, 5.0, 4.0]) + runs("big", "adapter", 8, [5.5, 6.0, 7.0])
                         + runs("small", "full", 5, [2.0, 3.0, 2.5]) + runs("small", "adapter", 8, [7.5, 8.0, 8.0]))
    assert utils.describe_budgets(table) == [
        "acl_sup, big: full fine-tuning's best dev score came in the last epoch of its 5 (selected at epoch 4.5 on "
        "average), while adapter had 8: a method's lead over it there may be the budget as much as the method."]
    assert utils.describe_budgets(table.drop(columns="selected_epoch")) == []  # runs not selected on dev


def test_tables_and_curves_of_one_config_from_run_folders(fixture_data, tmp_path):
    # Two settings of one model and dataset (same label: model, method, lr), as after EPOCHS=1 then EPOCHS=3:
    # selecting by config keeps them apart, and the curves follow the selected runs' folders.
    from studykit.runs import RunFolder

    def finish(config, f1):
        folder = RunFolder.for_config(config)
        folder.write_config(config)
        log = [{"step": 1, "epoch": 1.0, "split": "test", "f1_macro": f1, "accuracy": f1}]
        folder.write_finished(log, [0] * 48, {"f1_macro": f1, "accuracy": f1, "eval_loss": 1.0, "hardware": "cpu",
                                              "train_time_s": 1.0, "status": "finished"})
    one = [_config(fixture_data, tmp_path, seed=s, epochs=1) for s in (1, 2)]
    three = [_config(fixture_data, tmp_path, seed=s, epochs=3) for s in (1, 2)]
    for c in one:
        finish(c, 0.1)
    for c in three:
        finish(c, 0.9)
    results = utils.load_results(tmp_path, task="task2")
    assert len(results) == 4 and results["label"].nunique() == 1  # the label cannot tell them apart
    chosen = utils.select_runs(results, three)
    assert len(chosen) == 2 and set(chosen["f1_macro"]) == {0.9}
    metrics = utils.load_metrics(tmp_path, task="task2")
    curves = metrics[metrics["run_dir"].isin(chosen["run_dir"])]
    assert len(curves) == 2 and set(curves["f1_macro"]) == {0.9}
    assert set(curves["config_hash"]) == {three[0].config_hash()}


def test_time_per_epoch_with_and_without_evaluation():
    results = pd.DataFrame([{"dataset": "d", "label": "m", "train_time_s": 300.0, "epochs_run": 3,
                             "time_per_epoch_s": 150.0, "train_samples_per_s": 20.0}])
    table = utils.time_per_epoch(results)
    assert table.loc[("d", "m"), "s/epoch, training only"] == 100.0
    assert table.loc[("d", "m"), "s/epoch incl. evaluations"] == 150.0
    assert utils.describe_time_per_epoch(table) == [
        "d, m: 100 s per epoch of training, 150 s with the test evaluations (+50%); 20 training examples/s."]


def test_time_per_epoch_is_the_median_so_one_slowed_run_does_not_move_it():
    # three seeds, the third slowed 5x by other load on the machine: the median stays at the other two's time
    results = pd.DataFrame([{"dataset": "d", "label": "m", "train_time_s": t, "epochs_run": 2, "time_per_epoch_s": t / 2,
                             "train_samples_per_s": 20.0} for t in (200.0, 220.0, 1000.0)])
    assert utils.time_per_epoch(results).loc[("d", "m"), "s/epoch, training only"] == 110.0


def test_selection_table_reports_the_budget_used_and_the_epoch_chosen():
    rows = [{"dataset": "acl_sup", "label": "adapter", "seed": s, "epochs": 8, "epochs_trained": t,
             "selected_epoch": e, "stopped_early": t < 8, "dev_f1_macro": 0.5, "train_time_s": 600.0}
            for s, (t, e) in enumerate([(8.0, 7.5), (6.5, 7.0), (8.0, 8.0)], 1)]
    rows.append({"dataset": "acl_sup", "label": "full (old run)", "seed": 1, "epochs": 5, "epochs_trained": 5.0,
                 "selected_epoch": None, "stopped_early": None, "dev_f1_macro": None, "train_time_s": 100.0})
    table = utils.selection_table(pd.DataFrame(rows))
    row = table.loc[("acl_sup", "adapter")]
    assert list(table.index) == [("acl_sup", "adapter")]  # runs without selection are not in it
    assert row["epochs trained"] == pytest.approx(22.5 / 3) and row["selected epoch"] == pytest.approx(7.5)
    assert row["stopped early"] == "1 of 3" and row["training min"] == pytest.approx(10.0)
    text = utils.describe_selection(table)[0]
    assert "trained 7.5 of 8 epochs" in text and "a larger budget may still help" in text
    earlier = pd.DataFrame(rows[:3]).assign(selected_epoch=4.0)
    assert "larger budget" not in utils.describe_selection(utils.selection_table(earlier))[0]
    assert utils.selection_table(pd.DataFrame(rows[-1:])).empty


# --- tables that cannot pool: every function that aggregates runs ----------------------------------------------

def _pooled(fixture_data, tmp_path):
    """Six seed-1 runs under one label, each with other settings (as load_results reads a shared folder)."""
    rows = []
    for i, decay in enumerate([0.0, 0.01, 0.1, 0.2, 0.5, 1.0]):
        config = _config(fixture_data, tmp_path, weight_decay=decay)
        rows.append(_row(config, tmp_path / f"h{i}/seed1", f1_macro=0.4 + i / 50, weight_decay=decay,
                         accuracy=0.5, eval_loss=1.0, model_name="tiny-bert", selected_epoch=1.0, epochs=4,
                         epochs_trained=2.0, dev_f1_macro=0.5, train_time_s=1.0))
    return pd.DataFrame(rows)


AGGREGATORS = {
    "summarize": lambda r: utils.summarize(r),
    "describe_ranking": lambda r: utils.describe_ranking(r),
    "check_claims": lambda r: utils.check_claims(r),
    "compare_methods": lambda r: utils.compare_methods(r),
    "selection_table": lambda r: utils.selection_table(r),
    "per_class_scores": lambda r: utils.per_class_scores(r),
    "confusion_matrices": lambda r: utils.confusion_matrices(r),
    "overlap_effect": lambda r: utils.overlap_effect(r, "restaurant_sup"),
    "paired_comparison": lambda r: utils.paired_comparison(r, "m", "other"),
    "compare_models": lambda r: utils.compare_models(r),
    "compare_sizes": lambda r: utils.compare_sizes(r),
    "task2_findings": lambda r: utils.task2_findings(r, pd.DataFrame()),
}


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_a_table_that_pools_configurations_under_one_label_is_refused(fixture_data, tmp_path, name):
    results = _pooled(fixture_data, tmp_path)
    results = pd.concat([results, results.iloc[:1].assign(label="other", config_hash="other")], ignore_index=True)
    with pytest.raises(ValueError, match=rf"{name}: the group .*'m'.* holds runs of 6 configurations .*settings "
                                         r"that differ: weight_decay: 0.0, 0.01, 0.1, 0.2, 0.5, 1.0.*select_runs"):
        AGGREGATORS[name](results)


def test_curve_facts_refuse_pooled_curves(fixture_data, tmp_path):
    runs = _pooled(fixture_data, tmp_path).iloc[:2]
    metrics = pd.concat([_curve(1, [0.2, 0.5]).assign(run_dir=r["run_dir"], config_hash=r["config_hash"])
                         for _, r in runs.iterrows()], ignore_index=True)
    with pytest.raises(ValueError, match="curve_facts: .* 2 configurations"):
        utils.curve_facts(metrics, {"d": 0.2})


def test_summarize_by_the_setting_that_differs_keeps_configurations_apart(fixture_data, tmp_path):
    table = utils.summarize(_pooled(fixture_data, tmp_path), by=("dataset", "label", "weight_decay"))
    assert len(table) == 6 and set(table[("f1_macro", "n")]) == {1}


def test_duplicate_seeds_warn_and_count_once_in_every_aggregate(fixture_data, tmp_path):
    config, other = _config(fixture_data, tmp_path), _config(fixture_data, tmp_path, epochs=1)
    results = pd.DataFrame([_row(config, tmp_path / "x/seed1", f1_macro=0.2), _row(config, tmp_path / "y/seed1", f1_macro=0.8),
                            _row(other, tmp_path / "z/seed1", label="b", f1_macro=0.5)])
    with pytest.warns(utils.DuplicateSeedWarning, match=r"summarize: duplicate runs.*x/seed1, .*y/seed1"):
        table = utils.summarize(results, metrics=("f1_macro",))
    assert table.loc[("restaurant_sup", "m"), ("f1_macro", "mean")] == 0.2  # the first folder, not the mean
    assert table.loc[("restaurant_sup", "m"), ("f1_macro", "n")] == 1
    with pytest.warns(utils.DuplicateSeedWarning, match="paired_comparison: duplicate runs"):
        assert utils.paired_comparison(results, "m", "b")["mean_diff"] == pytest.approx(0.3)  # 0.5 - 0.2, not 0.5 - 0.5
    for call in (lambda: utils.summarize(results, on_duplicate="error"),
                 lambda: utils.paired_comparison(results, "m", "b", on_duplicate="error")):
        with pytest.raises(ValueError, match="never averaged.*x/seed1"):
            call()
