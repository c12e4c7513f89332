import pytest

import utils


def test_full_profile_is_the_45_run_study_with_the_reports_settings():
    configs = utils.study_configs("task2", "full")
    assert len(configs) == 45
    assert {c.model_name for c in configs} == {"roberta-base", "bert-base-uncased", "allenai/scibert_scivocab_uncased"}
    by_data = {c.dataset: (c.epochs, c.batch_size, c.learning_rate) for c in configs}
    assert by_data == {"restaurant_sup": (4, 64, 1e-5), "acl_sup": (4, 64, 1e-5), "agnews_sup": (5, 64, 2e-5)}
    assert len({c.run_dir for c in configs}) == 45


def test_task3_full_has_report_and_adapter_learning_rates():
    configs = utils.study_configs("task3", "full")
    assert {c.adapter_size for c in configs} == {64} and {c.model_name for c in configs} == {"roberta-base"}
    agnews = {c.learning_rate for c in configs if c.dataset == "agnews_sup"}
    assert agnews == {5e-5, 5e-4} and {c.epochs for c in configs if c.dataset == "agnews_sup"} == {6}
    assert {c.learning_rate for c in configs if c.dataset == "acl_sup"} == {1e-5, 5e-4}


def test_overrides_replace_profile_values_and_results_dirs_keep_profiles_apart():
    configs = utils.study_configs("task2", "fast", models=["tiny-bert"], seeds=[7], epochs=1, learning_rate=0.1)
    assert {(c.model_name, c.seed, c.epochs, c.learning_rate) for c in configs} == {("tiny-bert", 7, 1, 0.1)}
    assert configs[0].results_dir == "results/fast"
    assert utils.study_configs("task2", "full")[0].results_dir == "results/full"


def test_unknown_profile_or_task_lists_valid_names():
    with pytest.raises(ValueError, match="valid: \\['fast', 'full', 'parity', 'reference'\\]"):
        utils.study_configs("task2", "huge")
    with pytest.raises(ValueError, match="unknown task"):
        utils.study_configs("task9", "fast")


def test_from_env_parses_by_type_and_rejects_bad_values(monkeypatch):
    monkeypatch.setenv("SEEDS", "1, 2,3")
    monkeypatch.setenv("EPOCHS", "3")
    monkeypatch.setenv("MODELS", "roberta-base,bert-base-uncased")
    monkeypatch.setenv("LR", "none")
    assert utils.from_env("SEEDS", None, list) == [1, 2, 3]
    assert utils.from_env("EPOCHS", None, int) == 3
    assert utils.from_env("MODELS", None, list) == ["roberta-base", "bert-base-uncased"]
    assert utils.from_env("LR", 1e-5) is None
    assert utils.from_env("UNSET_VARIABLE_XYZ", "fast") == "fast"
    monkeypatch.setenv("EPOCHS", "four")
    with pytest.raises(ValueError, match="EPOCHS='four' is not a valid int"):
        utils.from_env("EPOCHS", None, int)


def test_a_variant_can_run_its_own_seeds(monkeypatch):
    from studykit import profiles
    spec = dict(profiles.PROFILES["task2"]["fast"])
    spec["runs"] = {"acl_sup": [dict(epochs=1, seeds=[3])], "restaurant_sup": [dict(epochs=1)]}
    monkeypatch.setitem(profiles.PROFILES["task2"], "fast", spec)
    configs = utils.study_configs("task2", "fast", models=["tiny-bert"])
    assert sorted((c.dataset, c.seed) for c in configs) == [("acl_sup", 3), ("restaurant_sup", 1), ("restaurant_sup", 2)]
    # seeds asked for narrow the study and never widen a variant's stated cut
    assert [(c.dataset, c.seed) for c in utils.study_configs("task2", "fast", models=["tiny-bert"], seeds=[7])] == [
        ("restaurant_sup", 7)]
    assert sorted((c.dataset, c.seed) for c in utils.study_configs("task2", "fast", models=["tiny-bert"], seeds=[2, 3])) \
        == [("acl_sup", 3), ("restaurant_sup", 2), ("restaurant_sup", 3)]


def test_a_variant_can_name_its_models(monkeypatch):
    from studykit import fetch, profiles
    spec = dict(profiles.PROFILES["task2"]["fast"], models=["tiny-bert"])
    spec["runs"] = {"restaurant_sup": [dict(epochs=1)], "agnews_sup": [dict(epochs=1, models=["tiny-roberta"])]}
    monkeypatch.setitem(profiles.PROFILES["task2"], "fast", spec)
    configs = utils.study_configs("task2", "fast", seeds=[1])
    assert sorted((c.dataset, c.model_name) for c in configs) == [("agnews_sup", "tiny-roberta"),
                                                                 ("restaurant_sup", "tiny-bert")]
    assert fetch.profile_needs("fast", ["task2"]) == (["tiny-bert", "tiny-roberta"], ["restaurant_sup", "agnews_sup"])


def test_the_reference_profile_runs_two_sizes_and_ag_news_at_the_small_one():
    cells = {(c.model_name, c.dataset, c.method_name) for t in ("task2", "task3") for c in utils.study_configs(t, "reference")}
    for method in ("full", "adapter", "lora"):
        for model in ("all-minilm-l6-v2", "all-mpnet-base-v2"):
            assert {(model, d, method) for d in ("restaurant_sup", "acl_sup")} <= cells
        assert ("all-minilm-l6-v2", "agnews_sup", method) in cells
        assert ("all-mpnet-base-v2", "agnews_sup", method) not in cells  # AG News at base size: the stated cut
    seeds = {}
    for t in ("task2", "task3"):
        for c in utils.study_configs(t, "reference"):
            seeds.setdefault((c.model_name, c.dataset, c.method_name, c.learning_rate), set()).add(c.seed)
    # five seeds in every cell but MPNet-base's adapters and LoRA (four: the stated cut); the LoRA
    # learning-rate check on dev is one seed of MiniLM's
    base_peft = {("all-mpnet-base-v2", d, m, lr): {1, 2, 3, 4} for d in ("restaurant_sup", "acl_sup")
                 for m, lr in (("adapter", 1e-3), ("lora", 2e-3))}
    assert {k: v for k, v in seeds.items() if v != {1, 2, 3, 4, 5}} == {
        ("all-minilm-l6-v2", "restaurant_sup", "lora", 5e-4): {1}, **base_peft}
