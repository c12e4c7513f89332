"""The data module: the real files load with their published counts; bad files fail with file:line."""
import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest

from studykit.data import (AGNEWS_SPLIT_SEED, DATASET_NAMES, DATASETS, FEW_SHOT_PER_CLASS, DataError,
                           get_dataset)

SEP = "[SEP]"
# (dataset, train, test, train label counts) from ../shared/data/README.md, parsed from the raw files
REAL = {
    "restaurant": (3452, 1120, {"positive": 2094, "neutral": 579, "negative": 779}),
    "acl": (1688, 139, {"Background": 867, "Uses": 317, "CompareOrContrast": 305, "Motivation": 76,
                        "Extends": 63, "Future": 60}),
    "agnews": (6840, 760, None),
}


def label_counts(split):
    names = split.features["label"].names
    return {names[k]: v for k, v in Counter(split["label"]).items()}


# ----------------------------------------------------------------------------- real data

@pytest.mark.parametrize("base", list(REAL))
def test_real_dataset_sizes_and_labels(real_data, base):
    train_size, test_size, train_labels = REAL[base]
    ds = get_dataset(f"{base}_sup", SEP, real_data)
    assert (len(ds["train"]), len(ds["test"])) == (train_size, test_size)
    assert ds["train"].features["label"].names == list(DATASETS[base].labels)
    assert list(ds["train"].features) == ["text", "label"]
    if train_labels:
        assert label_counts(ds["train"]) == train_labels
    assert set(ds["test"]["label"]) == set(range(len(DATASETS[base].labels)))
    assert all(text.strip() for text in ds["train"]["text"][:200])


def test_restaurant_text_is_term_sep_sentence(real_data):
    raw = json.loads((Path(real_data) / "restaurant" / "train.json").read_text())
    first = next(iter(raw.values()))
    assert get_dataset("restaurant_sup", "</s>", real_data)["train"][0]["text"] == \
        f"{first['term']} </s> {first['sentence']}"


def test_agnews_split_is_the_seeded_9_to_1_split_of_the_file(real_data):
    with open(Path(real_data) / "agnews" / "test.csv", newline="", encoding="utf-8") as f:
        rows = [f"{title} {description}".replace("\\", " ") for _, title, description in csv.reader(f)]
    assert len(rows) == 7600
    # The same permutation of row indices that datasets draws for the split, on the row numbers alone.
    index = datasets.Dataset.from_dict({"row": list(range(len(rows)))})
    split = index.train_test_split(test_size=0.1, seed=AGNEWS_SPLIT_SEED)
    train_rows, test_rows = split["train"]["row"], split["test"]["row"]
    assert not set(train_rows) & set(test_rows) and len(set(train_rows) | set(test_rows)) == 7600

    first, again = get_dataset("agnews_sup", SEP, real_data), get_dataset("agnews_sup", SEP, real_data)
    assert first["train"]["text"] == again["train"]["text"] and first["test"]["text"] == again["test"]["text"]
    assert first["train"]["text"] == [rows[i] for i in train_rows]  # each train row is its file row ...
    assert first["test"]["text"] == [rows[i] for i in test_rows]    # ... and no row index is in both


@pytest.mark.parametrize("base", list(REAL))
def test_few_shot_takes_a_fixed_sample_per_class(real_data, base):
    full, few = get_dataset(f"{base}_sup", SEP, real_data), get_dataset(f"{base}_fs", SEP, real_data)
    classes = len(DATASETS[base].labels)
    assert len(few["train"]) == classes * FEW_SHOT_PER_CLASS  # every class of the real files has >= 32
    assert set(Counter(few["train"]["label"]).values()) == {FEW_SHOT_PER_CLASS}
    assert few["test"]["text"] == full["test"]["text"]
    assert set(few["train"]["text"]) <= set(full["train"]["text"])
    assert few["train"]["text"] == get_dataset(f"{base}_fs", SEP, real_data)["train"]["text"]


def test_merged_datasets_keep_their_label_ids_apart(real_data):
    merged = get_dataset(["restaurant_sup", "acl_sup"], SEP, real_data)
    names = merged["train"].features["label"].names
    assert names == list(DATASETS["restaurant"].labels) + list(DATASETS["acl"].labels)
    assert (len(merged["train"]), len(merged["test"])) == (3452 + 1688, 1120 + 139)
    restaurant, acl = merged["train"]["label"][:3452], merged["train"]["label"][3452:]
    assert set(restaurant) == {0, 1, 2} and set(acl) == set(range(3, 9))
    assert Counter(names[k] for k in acl) == Counter(REAL["acl"][2])


# ----------------------------------------------------------------------------- bad input

@pytest.fixture
def data(tmp_path, fixture_data):
    """A writable copy of the fixture data, to break."""
    shutil.copytree(fixture_data, tmp_path / "data")
    return tmp_path / "data"


@pytest.mark.parametrize("name", ["restaurant", "imdb_sup", "acl_sup ", ["acl_sup", "agnews"], []])
def test_unknown_dataset_name_lists_the_valid_ones(name):
    with pytest.raises(DataError, match="valid names: " + ", ".join(DATASET_NAMES)):
        get_dataset(name, SEP)


@pytest.mark.parametrize("base, file", [("restaurant", "train.json"), ("acl", "test.jsonl")])
def test_missing_file_names_the_file_and_where_to_get_it(data, base, file):
    (data / base / file).unlink()
    with pytest.raises(DataError) as err:
        get_dataset(f"{base}_sup", SEP, data)
    message = str(err.value)
    assert f"missing data file {data / base / file}" in message
    assert DATASETS[base].source.split(" (")[0] in message and "DATA_DIR" in message


def test_missing_agnews_is_an_error_that_offers_the_hub_only_on_request(data, monkeypatch):
    monkeypatch.delenv("AGNEWS_FROM_HUB", raising=False)
    (data / "agnews" / "test.csv").unlink()
    with pytest.raises(DataError, match=r"missing data file .*test\.csv.*python train\.py fetch.*"
                                        r"'fancyzhx/ag_news' instead .*AGNEWS_FROM_HUB=1"):
        get_dataset("agnews_sup", SEP, data)
    monkeypatch.setenv("AGNEWS_FROM_HUB", "1")  # tests run with HF_HUB_OFFLINE=1: the opt-in fails, named
    with pytest.raises(DataError, match=r"AGNEWS_FROM_HUB=1 asked for the Hub copy 'fancyzhx/ag_news', which failed"):
        get_dataset("agnews_sup", SEP, data)


def test_missing_data_dir_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # default ./data, which does not exist here
    with pytest.raises(DataError, match=r"missing data file data/acl/train\.jsonl.*DATA_DIR"):
        get_dataset("acl_sup", SEP)


def _rewrite_line(path, lineno, text):
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = text
    path.write_text("".join(lines))


def test_malformed_json_line_gives_file_and_line(data):
    path = data / "acl" / "train.jsonl"
    _rewrite_line(path, 7, '{"text": "cut off in the mid\n')
    with pytest.raises(DataError, match=f"{path}:7: malformed line"):
        get_dataset("acl_sup", SEP, data)
    _rewrite_line(path, 7, '{"label": "Uses"}\n')  # valid JSON without its text
    with pytest.raises(DataError, match=f"{path}:7: malformed line.*'text'"):
        get_dataset("acl_sup", SEP, data)


def test_malformed_restaurant_json_gives_file_and_line(data):
    path = data / "restaurant" / "test.json"
    path.write_text(path.read_text().replace("\n", "\n\n").replace('"polarity"', 'polarity', 1))
    with pytest.raises(DataError, match=rf"{path}:\d+: malformed JSON"):
        get_dataset("restaurant_sup", SEP, data)


def test_unknown_label_gives_file_line_and_the_valid_labels(data):
    acl = data / "acl" / "test.jsonl"
    _rewrite_line(acl, 3, json.dumps({"text": "we use it", "label": "Useful"}) + "\n")
    with pytest.raises(DataError, match=rf"{acl}:3: unknown label 'Useful'; expected one of \['Background'"):
        get_dataset("acl_sup", SEP, data)
    restaurant = data / "restaurant" / "train.json"
    items = json.loads(restaurant.read_text())
    key = next(iter(items))
    items[key]["polarity"] = "conflict"
    restaurant.write_text(json.dumps(items))
    with pytest.raises(DataError, match=rf"{restaurant}:\d+: item '{key}': unknown label 'conflict'"):
        get_dataset("restaurant_sup", SEP, data)
    agnews = data / "agnews" / "test.csv"
    _rewrite_line(agnews, 5, '"5","title","description"\n')
    with pytest.raises(DataError, match=rf"{agnews}:5: unknown label '5'; expected a class index 1-4"):
        get_dataset("agnews_sup", SEP, data)


def test_malformed_csv_row_gives_file_and_line(data):
    path = data / "agnews" / "test.csv"
    _rewrite_line(path, 12, '"2","a title without its description"\n')
    with pytest.raises(DataError, match=f"{path}:12: expected 3 columns .* got 2"):
        get_dataset("agnews_sup", SEP, data)


@pytest.mark.parametrize("base, file, content", [
    ("acl", "test.jsonl", ""), ("acl", "train.jsonl", "\n\n"), ("restaurant", "test.json", "{}"),
    ("agnews", "test.csv", "")])
def test_empty_split_is_an_error(data, base, file, content):
    (data / base / file).write_text(content)
    with pytest.raises(DataError, match=rf"{data / base / file}: the (test split|train split|file holds no)"):
        get_dataset(f"{base}_sup", SEP, data)


def test_a_restaurant_item_without_its_term_is_named(data):
    path = data / "restaurant" / "train.json"
    items = json.loads(path.read_text())
    key = list(items)[4]
    del items[key]["term"]
    path.write_text(json.dumps(items))
    with pytest.raises(DataError, match=rf"{path}:\d+: item '{key}' lacks \['term'\]"):
        get_dataset("restaurant_sup", SEP, data)
