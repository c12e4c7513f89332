"""Selection on the dev split: dev data, hashes that keep old runs where they are, and the engine's choice."""
import json

import pytest
import torch

import utils
from studykit import training
from studykit.data import AGNEWS_DEV_SEED, DataError, data_fingerprint, dataset_files, get_dataset
from studykit.evaluation import DevSelection

SEP = "[SEP]"


# ----------------------------------------------------------------------------- data

@pytest.mark.parametrize("base, dev_size", [("restaurant", 24), ("acl", 24)])
def test_dev_split_is_the_shipped_dev_file(fixture_data, base, dev_size):
    plain, with_dev = get_dataset(f"{base}_sup", SEP, fixture_data), get_dataset(f"{base}_sup", SEP, fixture_data, dev=True)
    assert list(plain) == ["train", "test"] and list(with_dev) == ["train", "dev", "test"]
    assert len(with_dev["dev"]) == dev_size
    assert with_dev["train"]["text"] == plain["train"]["text"] and with_dev["test"]["text"] == plain["test"]["text"]


def test_agnews_dev_is_carved_from_train_and_leaves_test_alone(fixture_data):
    plain, with_dev = get_dataset("agnews_sup", SEP, fixture_data), get_dataset("agnews_sup", SEP, fixture_data, dev=True)
    assert with_dev["test"]["text"] == plain["test"]["text"]
    train, dev = list(with_dev["train"]["text"]), list(with_dev["dev"]["text"])
    assert len(train) + len(dev) == len(plain["train"]) and len(dev) == round(0.1 * len(plain["train"]))
    assert sorted(train + dev) == sorted(plain["train"]["text"])
    assert list(get_dataset("agnews_sup", SEP, fixture_data, dev=True)["dev"]["text"]) == dev  # fixed seed
    assert AGNEWS_DEV_SEED != 2022  # not the seed of the train/test split (that would pair the two draws)


def test_real_dev_splits_have_their_published_sizes(real_data):
    sizes = {b: len(get_dataset(f"{b}_sup", SEP, real_data, dev=True)["dev"]) for b in ("restaurant", "acl", "agnews")}
    assert sizes == {"restaurant": 150, "acl": 114, "agnews": 684}


def test_few_shot_and_merged_datasets_keep_the_dev_split(fixture_data):
    few = get_dataset("acl_fs", SEP, fixture_data, dev=True)
    assert len(few["dev"]) == 24
    merged = get_dataset(["restaurant_sup", "acl_sup"], SEP, fixture_data, dev=True)
    assert len(merged["dev"]) == 48 and set(merged["dev"]["label"]) > set(range(3))


def test_a_missing_dev_file_is_named(tmp_path, fixture_data):
    import shutil
    shutil.copytree(fixture_data, tmp_path / "data")
    (tmp_path / "data" / "acl" / "dev.jsonl").unlink()
    get_dataset("acl_sup", SEP, tmp_path / "data")  # without dev it is not needed
    with pytest.raises(DataError, match=r"acl/dev\.jsonl.*dev\.jsonl"):
        get_dataset("acl_sup", SEP, tmp_path / "data", dev=True)


def test_dev_enters_the_fingerprint_only_when_used(fixture_data):
    assert [p.name for p in dataset_files("restaurant_sup", fixture_data)] == ["train.json", "test.json"]
    assert data_fingerprint("acl_sup", fixture_data) != data_fingerprint("acl_sup", fixture_data, dev=True)
    assert data_fingerprint("agnews_sup", fixture_data) != data_fingerprint("agnews_sup", fixture_data, dev=True)


def test_runs_without_selection_keep_their_hash(fixture_data):
    base = dict(model_name="tiny-bert", dataset="acl_sup", data_dir=fixture_data)
    plain = utils.RunConfig(**base)
    assert plain.config_hash() == utils.RunConfig(**base, early_stopping_patience=None).config_hash()
    assert plain.config_hash() != utils.RunConfig(**base, early_stopping_patience=2).config_hash()
    with pytest.raises(ValueError, match="early_stopping_patience"):
        utils.RunConfig(**base, early_stopping_patience=0)


# ----------------------------------------------------------------------------- selection

def test_selection_keeps_the_best_dev_evaluation_and_stops_after_patience():
    model = torch.nn.Linear(2, 2)
    selection = DevSelection(patience=2, keep_weights=True)
    assert not selection.update(0.5, {"f1_macro": 0.1}, [0], step=1, epoch=0.5, model=model)
    best_weight = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not selection.update(0.4, {"f1_macro": 0.9}, [1], step=2, epoch=1.0, model=model)  # test is not used
    assert selection.update(0.5, {"f1_macro": 0.8}, [1], step=3, epoch=1.5, model=model)      # a tie is no gain
    assert selection.best["step"] == 1 and selection.best["metrics"] == {"f1_macro": 0.1}
    selection.restore(model)
    assert torch.equal(model.weight, best_weight)


def test_a_run_selected_on_dev_reports_the_test_metrics_of_the_chosen_evaluation(tmp_path, fixture_data):
    config = utils.RunConfig(model_name="tiny-roberta", dataset="restaurant_sup", epochs=3, batch_size=16,
                             learning_rate=3e-3, data_dir=fixture_data, results_dir=str(tmp_path), num_threads=1,
                             evals_per_epoch=2, early_stopping_patience=2, adapter_size=8)
    summary = utils.train_run(config)
    log = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in log if r["split"] == "dev"]
    test = {r["step"]: r for r in log if r["split"] == "test"}
    assert dev and [r["step"] for r in dev] == list(test)  # dev evaluated wherever test is
    best = max(dev, key=lambda r: r["f1_macro"])  # first maximum: a later tie does not replace it
    assert summary["selected_step"] == best["step"] and summary["dev_f1_macro"] == best["f1_macro"]
    assert summary["f1_macro"] == test[best["step"]]["f1_macro"]
    assert summary["dev_examples"] == 24 and summary["eval_examples"] == 48
    after_best = [r for r in dev if r["step"] > best["step"]]
    assert summary["stopped_early"] == (len(after_best) == 2 and dev[-1]["step"] < 18)
    assert len(after_best) <= 2  # never more evaluations past the best than the patience
    assert summary["epochs_trained"] == pytest.approx(dev[-1]["epoch"])
    assert summary["data_source"]["restaurant_sup"]["files"][-1]["path"] == "restaurant/dev.json"
    predictions = json.loads((config.run_dir / "predictions.json").read_text())
    assert len(predictions) == 48
