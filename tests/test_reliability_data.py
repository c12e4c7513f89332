"""Promises about data files, one test each: every bad file is named with its line and what was expected,
nothing switches data source silently, and a run can record exactly which data it read.

The broken files are written by the tests into a copy of the fixture data (tmp_path)."""
import hashlib
import json
import os
import shutil

import pytest
from datasets import Dataset

import studykit.data as data_module
from studykit.data import DataError, data_fingerprint, dataset_source, get_dataset
from studykit.data import dataset_files

SEP = "[SEP]"
READERS = [("restaurant", "train.json"), ("acl", "train.jsonl"), ("agnews", "test.csv")]


@pytest.fixture
def data(tmp_path, fixture_data):
    """A writable copy of the fixture data, to break."""
    shutil.copytree(fixture_data, tmp_path / "data")
    return tmp_path / "data"


def _texts(name, root):
    ds = get_dataset(name, SEP, root)
    return {split: (list(part["text"]), list(part["label"])) for split, part in ds.items()}


def _restaurant_items(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("base, file", READERS)
def test_a_non_utf8_byte_is_named_with_file_line_and_byte_offset(data, base, file):
    path = data / base / file
    raw = path.read_bytes()
    third_line = raw.index(b"\n", raw.index(b"\n") + 1) + 1
    offset = third_line + 5  # inside the third line (a key, a text or a title; never the structure)
    path.write_bytes(raw[:offset] + b"\xe9" + raw[offset:])  # Latin-1 "é"
    with pytest.raises(DataError) as err:
        get_dataset(f"{base}_sup", SEP, data)
    assert str(err.value).startswith(f"{path}:3: not UTF-8 (byte 0xe9 at byte offset {offset}); expected UTF-8")


@pytest.mark.parametrize("base, file", READERS)
def test_a_utf8_byte_order_mark_is_read_as_utf8(data, base, file, fixture_data):
    path = data / base / file
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert _texts(f"{base}_sup", data) == _texts(f"{base}_sup", fixture_data)


def test_a_csv_field_over_the_csv_modules_default_limit_is_read(data):
    import csv
    path = data / "agnews" / "test.csv"
    long = "word " * (csv.field_size_limit() // 5 + 1000)  # over the default 128 KiB
    path.write_text(path.read_text() + f'"2","a long one","{long}"\n')
    texts = get_dataset("agnews_sup", SEP, data)
    assert any(len(t) > len(long) for split in texts.values() for t in split["text"])
    assert csv.field_size_limit() == 131072  # the module-wide limit is left as it was


def test_csv_errors_give_the_physical_line_where_a_record_may_span_lines(data):
    path = data / "agnews" / "test.csv"
    lines = path.read_text().splitlines(keepends=True)
    # Record 2 spans three physical lines (a quoted field with newlines); record 4 is broken.
    lines[1] = '"2","a title","a description\nover\nthree lines"\n'
    lines[3] = '"2","a title without its description"\n'
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=f"{path}:6: expected 3 columns .* got 2"):
        get_dataset("agnews_sup", SEP, data)


@pytest.mark.parametrize("row", ['"1","title","an unclosed quote\n', '"1","a stray" quote,"text"\n'])
def test_a_csv_quoting_error_names_file_and_line(data, row):
    path = data / "agnews" / "test.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:7] + [row] + lines[7:]))
    with pytest.raises(DataError, match=rf"{path}:8: malformed CSV \(.*\); expected the original ag_news_csv"):
        get_dataset("agnews_sup", SEP, data)


def test_a_restaurant_item_that_is_not_an_object_is_named_with_its_line(data):
    path = data / "restaurant" / "train.json"
    items = _restaurant_items(path)
    key = list(items)[2]
    items[key] = 7
    path.write_text(json.dumps(items, indent=1))
    line = next(i for i, text in enumerate(path.read_text().split("\n"), 1) if text.startswith(f' "{key}"'))
    with pytest.raises(DataError, match=rf"{path}:{line}: item '{key}' is a int \(7\); expected an object "
                                        r"\{sentence, term, polarity\}"):
        get_dataset("restaurant_sup", SEP, data)


def test_a_restaurant_file_that_is_not_an_object_is_named(data):
    path = data / "restaurant" / "test.json"
    path.write_text(json.dumps(list(_restaurant_items(path).values())))
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object id -> .*, got a list"):
        get_dataset("restaurant_sup", SEP, data)


def test_a_duplicate_restaurant_id_names_both_locations(data):
    path = data / "restaurant" / "test.json"
    text = path.read_text()
    first_key = next(iter(_restaurant_items(path)))
    second_key = list(_restaurant_items(path))[1]
    path.write_text(text.replace(f'"{second_key}": {{', f'"{first_key}": {{', 1))
    lines = path.read_text().split("\n")
    first, second = [i for i, line in enumerate(lines, 1) if line.startswith(f' "{first_key}"')]
    with pytest.raises(DataError, match=rf"{path}:{second}: duplicate id '{first_key}', first at {path}:{first}"):
        get_dataset("restaurant_sup", SEP, data)


@pytest.mark.parametrize("base, field, value", [
    ("restaurant", "sentence", None), ("restaurant", "term", None), ("restaurant", "sentence", "  "),
    ("acl", "text", None), ("acl", "text", ""), ("acl", "text", "\u00a0\u200b"), ("restaurant", "term", "\ufeff ")])
def test_a_null_or_empty_text_is_an_error_with_its_location(data, base, field, value):
    if base == "restaurant":
        path = data / "restaurant" / "train.json"
        items = _restaurant_items(path)
        key = list(items)[1]
        items[key][field] = value
        path.write_text(json.dumps(items, indent=1))
        where = rf"{path}:\d+: item '{key}'"
    else:
        path = data / "acl" / "train.jsonl"
        lines = path.read_text().split("\n")
        row = json.loads(lines[4])
        row[field] = value
        lines[4] = json.dumps(row)
        path.write_text("\n".join(lines))
        where = rf"{path}:5"
    with pytest.raises(DataError, match=rf"{where}: '{field}' is .*; expected a non-empty string") as err:
        get_dataset(f"{base}_sup", SEP, data)
    assert "None" not in str(err.value)


def test_an_empty_agnews_title_and_description_is_an_error_with_its_line(data):
    path = data / "agnews" / "test.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = '"1","",""\n'
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=rf"{path}:4: 'title and description' is empty; expected a non-empty"):
        get_dataset("agnews_sup", SEP, data)


def test_a_missing_agnews_file_never_falls_back_to_the_hub_silently(data, monkeypatch):
    monkeypatch.delenv("AGNEWS_FROM_HUB", raising=False)
    calls = []
    monkeypatch.setattr(data_module, "_load_agnews_hub", lambda: calls.append(1))
    path = data / "agnews" / "test.csv"
    path.unlink()
    with pytest.raises(DataError) as err:
        get_dataset("agnews_sup", SEP, data)
    message = str(err.value)
    assert calls == []
    assert f"missing data file {path}" in message
    assert "3 quoted columns (class index 1-4, title, description)" in message  # the expected format
    assert "python train.py fetch" in message and "ag_news_csv/test.csv" in message  # how to get it
    assert "AGNEWS_FROM_HUB=1" in message and "fancyzhx/ag_news" in message  # the explicit opt-in


def test_the_hub_copy_of_agnews_is_read_only_when_asked_for(data, monkeypatch):
    hub = Dataset.from_dict({"text": [f"news {i}" for i in range(40)], "label": [i % 4 for i in range(40)]},
                            features=data_module._features(data_module.DATASETS["agnews"].labels))
    monkeypatch.setattr(data_module, "_load_agnews_hub", lambda: hub)
    monkeypatch.setattr(data_module, "_agnews_hub_revision", lambda: "abc123")
    from_file = _texts("agnews_sup", data)
    monkeypatch.setenv("AGNEWS_FROM_HUB", "1")
    assert _texts("agnews_sup", data) == from_file  # the file still wins over the Hub
    (data / "agnews" / "test.csv").unlink()
    ds = get_dataset("agnews_sup", SEP, data)
    assert len(ds["train"]) + len(ds["test"]) == 40
    assert dataset_source("agnews_sup", data) == {"agnews_sup": {"hub": "fancyzhx/ag_news", "revision": "abc123"}}


def test_dataset_source_records_each_file_path_and_content_hash(data):
    source = dataset_source(["restaurant_sup", "agnews_fs"], data)
    expected = {
        name: {"files": [{"path": f"{folder}/{file}",
                          "sha256": hashlib.sha256((data / folder / file).read_bytes()).hexdigest()}
                         for file in files]}
        for name, folder, files in [("restaurant_sup", "restaurant", ["train.json", "test.json"]),
                                    ("agnews_fs", "agnews", ["test.csv"])]}
    assert source == expected
    json.dumps(source)  # a run summary stores it as JSON


def _data_fingerprint(dataset, data_dir):
    """The engine's fingerprint before it switched to studykit.data's (kept here to pin the folder names)."""
    digest = hashlib.sha256()
    for name in [dataset] if isinstance(dataset, str) else dataset:
        digest.update(name.encode())
        for path in dataset_files(name, data_dir):
            digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() if path.is_file() else b"missing")
    return digest.hexdigest()


@pytest.mark.parametrize("name", ["restaurant_sup", "acl_fs", "agnews_sup", ["acl_sup", "restaurant_fs"]])
def test_data_fingerprint_equals_the_engines_fingerprint(fixture_data, data, name):
    """The committed run folders are named with the engine's hash: the public function must match it."""
    assert data_fingerprint(name, fixture_data) == _data_fingerprint(name, fixture_data)
    (data / "agnews" / "test.csv").unlink()  # a missing file counts the same way in both
    assert data_fingerprint(name, data) == _data_fingerprint(name, data)


def test_data_fingerprint_follows_the_content_not_the_file_dates(data):
    path = data / "acl" / "test.jsonl"
    before = data_fingerprint("acl_sup", data)
    stat = path.stat()
    text = path.read_text()
    path.write_text(text.replace("Background", "Backgrounx", 1))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same date, as `cp -p` or `rsync -t` keep it
    assert path.stat().st_size == stat.st_size
    assert data_fingerprint("acl_sup", data) != before
    path.write_text(text)
    os.utime(path, ns=(1, 1))  # another date, same content
    assert data_fingerprint("acl_sup", data) == before
