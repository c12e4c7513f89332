"""Data: the three classification datasets, read from their raw distributed files.

`get_dataset(name, sep_token)` returns a `datasets.DatasetDict` with `train` and `test` splits, columns
`text` and `label` (a `ClassLabel` with the class names); `dev=True` adds a `dev` split for model selection
(the shipped dev file of restaurant and acl; for AG News, 10 % carved from its training split). The raw files are parsed here, not by
`datasets.load_dataset`, so a malformed file is reported with its path and line number.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from huggingface_hub import HfApi
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

__all__ = [
    "DATASETS", "DATASET_NAMES", "FEW_SHOT_PER_CLASS", "FEW_SHOT_SEED", "AGNEWS_SPLIT_SEED", "AGNEWS_DEV_SEED",
    "DataError", "get_dataset", "resolve_data_dir", "dataset_files", "dataset_source", "data_fingerprint",
    "check_data_files", "describe_overlaps", "sha256_of",
    "audit_dataset", "test_overlap_mask", "AGNEWS_HUB_ID", "AGNEWS_FROM_HUB_ENV",
]

AGNEWS_SPLIT_SEED = 2022   # the course's 9:1 split of the 7600-row AG News test set
AGNEWS_DEV_SEED = 2023     # AG News ships no dev split: 10 % of its training split, drawn with this seed
FEW_SHOT_PER_CLASS = 32    # few-shot variants: 32 training examples per class (fewer if a class is smaller)
FEW_SHOT_SEED = 2022       # ... drawn with this seed, so every run sees the same few-shot set


class DataError(ValueError):
    """A dataset is missing, malformed or unknown; the message says what to fix."""


@dataclass(frozen=True)
class DatasetSpec:
    folder: str
    files: tuple[str, ...]     # (train, test), or AG News's one file that both come from
    labels: tuple[str, ...]
    source: str
    dev_file: str | None = None  # the shipped dev split; None: carved from train (AG News)


DATASETS = {
    "restaurant": DatasetSpec(
        "restaurant", ("train.json", "test.json"), ("positive", "neutral", "negative"),
        "SemEval-2014 Task 4 restaurants in the Xu et al. 2019 ASC format "
        "(github.com/howardhsu/ASC_failure, folder asc/rest; test.json = test_full.json)", "dev.json"),
    "acl": DatasetSpec(
        "acl", ("train.jsonl", "test.jsonl"),
        ("Background", "Uses", "CompareOrContrast", "Motivation", "Extends", "Future"),
        "ACL-ARC citation intent (github.com/allenai/scibert, data/text_classification/citation_intent; "
        "train.txt/test.txt renamed to .jsonl)", "dev.jsonl"),
    "agnews": DatasetSpec(
        "agnews", ("test.csv",), ("World", "Sports", "Business", "Sci/Tech"),
        "AG News ag_news_csv/test.csv (github.com/Shane-Neeley/CharCnn_Keras, data/ag_news_csv at commit "
        "03836ce08fce38daac53e9b4255ef16e0b9f6303, not HEAD where test.csv is cut down; torchtext's AG_NEWS "
        "test split, md5 d52ea96a97a2d943681189a97654912d)"),
}
DATASET_NAMES = tuple(f"{d}_{kind}" for d in DATASETS for kind in ("sup", "fs"))
AGNEWS_HUB_ID = "fancyzhx/ag_news"
AGNEWS_FROM_HUB_ENV = "AGNEWS_FROM_HUB"  # set to 1 to read AG News from the Hub when test.csv is missing
FORMATS = {
    "restaurant": "one JSON object id -> {\"sentence\", \"term\", \"polarity\"} per file (Xu et al. 2019 ASC)",
    "acl": "JSON Lines, one object {\"text\", \"label\", ...} per line",
    "agnews": "the original ag_news_csv: no header, 3 quoted columns (class index 1-4, title, description)",
}
FETCH_HINT = "`python train.py fetch` downloads them (with the expected names) on a machine with network"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`data_dir`, else the DATA_DIR environment variable, else ./data."""
    return Path(data_dir or os.environ.get("DATA_DIR") or "data")


def dataset_files(name: str, data_dir=None, dev: bool = False) -> list[Path]:
    """The raw files a dataset name reads (with `dev`: also its dev file, where it ships one)."""
    spec = DATASETS[_split_name(name)[0]]
    root = resolve_data_dir(data_dir) / spec.folder
    return [root / f for f in spec.files + ((spec.dev_file,) if dev and spec.dev_file else ())]


def _names(dataset) -> list[str]:
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    for name in names:
        _split_name(name)
    return names


def _agnews_from_hub() -> bool:
    return os.environ.get(AGNEWS_FROM_HUB_ENV, "").strip().lower() in {"1", "true", "yes"}


def check_data_files(name, data_dir=None, dev: bool = False) -> None:
    """Raise the `DataError` that loading would raise for a missing file of `name` (a name or a list), at once
    and without reading anything: a grid checks its settings before it writes a run folder."""
    for one in _names(name):
        base = _split_name(one)[0]
        paths = dataset_files(one, data_dir, dev)
        if base == "agnews" and not paths[0].is_file() and _agnews_from_hub():
            continue
        for path in paths:
            _require(path, base)


def dataset_source(name, data_dir=None, dev: bool = False) -> dict:
    """Where a dataset (a name or a list of names) comes from, for a run's summary: for each name its
    files (path relative to the data folder and sha256 of the content), or the Hub id and revision."""
    root = resolve_data_dir(data_dir)
    sources = {}
    for one in _names(name):
        base = _split_name(one)[0]
        paths = dataset_files(one, data_dir, dev)
        if base == "agnews" and not paths[0].is_file() and _agnews_from_hub():
            sources[one] = {"hub": AGNEWS_HUB_ID, "revision": _agnews_hub_revision()}
            continue
        files = []
        for path in paths:
            _require(path, base)
            files.append({"path": path.relative_to(root).as_posix(), "sha256": sha256_of(path)})
        sources[one] = {"files": files}
    return sources


def data_fingerprint(name, data_dir=None, dev: bool = False) -> str:
    """A hash of the dataset name(s) and the content of their files (not their dates), which names the
    run folders; a missing file (AG News from the Hub) counts as the word "missing". `dev`: the splits
    include a dev split (its file, or for AG News the carving seed), so such runs never share a folder
    with runs trained on the whole training split; without it the hash is what it always was."""
    digest = hashlib.sha256()
    for one in _names(name):
        digest.update(one.encode())
        if dev:
            digest.update(f"dev:{AGNEWS_DEV_SEED}".encode())
        for path in dataset_files(one, data_dir, dev):
            digest.update(sha256_of(path).encode() if path.is_file() else b"missing")
    return digest.hexdigest()


def sha256_of(path) -> str:
    """The sha256 of a file's content, read in 1 MiB blocks (data files, model weights: the one helper)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _split_name(name: str) -> tuple[str, str]:
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)} "
                        "(or a list of them to merge)")
    base, kind = name.rsplit("_", 1)
    return base, kind


def _features(labels) -> Features:
    return Features({"text": Value("string"), "label": ClassLabel(names=list(labels))})


def _label_id(value, labels, path, where):
    if value not in labels:
        raise DataError(f"{path}:{where}: unknown label {value!r}; expected one of {list(labels)}")
    return labels.index(value)


def _require(path: Path, name: str) -> Path:
    if not path.is_file():
        spec = DATASETS[name]
        expected = spec.files + ((spec.dev_file,) if path.name == spec.dev_file else ())
        raise DataError(
            f"missing data file {path}. {name} expects {', '.join(expected)} in {path.parent}, "
            f"format: {FORMATS[name]}. {FETCH_HINT}; or get them from the public source: {spec.source}. "
            "Pass data_dir=... or set DATA_DIR to the folder that holds restaurant/, acl/ and agnews/."
            + (f" To read the Hub copy {AGNEWS_HUB_ID!r} instead (another copy: its runs get another "
               f"data fingerprint and are not compared with runs on the file), set {AGNEWS_FROM_HUB_ENV}=1." if name == "agnews" else ""))
    return path


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark; other bytes are an error naming
    the line and byte offset."""
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = start + err.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{data[offset]:02x} at byte offset {offset}); "
                        "expected UTF-8 text: re-save the file as UTF-8") from None


def _text(value, path, where, field) -> str:
    """A non-empty string field, or an error naming where it is (never the text "None"). Empty: nothing but
    whitespace and invisible characters (a no-break or zero-width space, a byte-order mark)."""
    if not isinstance(value, str) or not _visible(value):
        got = (("empty" if not value.strip() else f"empty (only invisible characters: {json.dumps(value)})")
               if isinstance(value, str)
               else "null" if value is None else f"{json.dumps(value)[:60]} (a {type(value).__name__})")
        raise DataError(f"{path}:{where}: {field!r} is {got}; expected a non-empty string")
    return value


def _visible(text: str) -> bool:
    """Whether `text` has a character that is neither whitespace nor an invisible format character (Cf:
    zero-width space, joiners, byte-order mark)."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _top_level_items(text: str):
    """(key, value, line) for each member of a valid JSON object, in file order, duplicates included
    (json.loads keeps only the last of a duplicated key)."""
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text, 0).end() + 1  # past "{"
    line, line_pos = 1, 0
    while True:
        pos = _WHITESPACE.match(text, pos).end()
        if text[pos] == "}":
            return
        line += text.count("\n", line_pos, pos)
        line_pos = pos
        key, pos = json.decoder.scanstring(text, pos + 1)
        pos = _WHITESPACE.match(text, pos).end() + 1  # past ":"
        value, pos = decoder.raw_decode(text, _WHITESPACE.match(text, pos).end())
        yield key, value, line
        pos = _WHITESPACE.match(text, pos).end()
        if text[pos] == ",":
            pos += 1


def _read_restaurant(path: Path, sep_token: str) -> dict:
    labels = DATASETS["restaurant"].labels
    text = _read_text(path)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg}); expected one object "
                        "id -> {sentence, term, polarity}") from None
    if not isinstance(items, dict):
        raise DataError(f"{path}:1: expected a JSON object id -> {{sentence, term, polarity}}, "
                        f"got a {type(items).__name__}")
    texts, ids, seen = [], [], {}
    for key, item, line in _top_level_items(text):
        where = f"{line}: item {key!r}"
        if key in seen:
            raise DataError(f"{path}:{line}: duplicate id {key!r}, first at {path}:{seen[key]}; "
                            "every id must occur once")
        seen[key] = line
        if not isinstance(item, dict):
            raise DataError(f"{path}:{where} is a {type(item).__name__} ({json.dumps(item)[:60]}); "
                            "expected an object {sentence, term, polarity}")
        missing = {"sentence", "term", "polarity"} - set(item)
        if missing:
            raise DataError(f"{path}:{where} lacks {sorted(missing)}")
        sentence = _text(item["sentence"], path, where, "sentence")
        term = _text(item["term"], path, where, "term")
        # The aspect term comes first so that truncation never cuts it off.
        texts.append(f"{term} {sep_token} {sentence}")
        ids.append(_label_id(item["polarity"], labels, path, where))
    return {"text": texts, "label": ids}


def _read_acl(path: Path) -> dict:
    labels = DATASETS["acl"].labels
    texts, ids = [], []
    # Physical lines: split on "\n" only (str.splitlines would also split at U+2028 inside a string).
    for lineno, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, label = row["text"], row["label"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{lineno}: malformed line ({err!r}); expected a JSON object "
                            "with 'text' and 'label'") from None
        texts.append(_text(text, path, lineno, "text"))
        ids.append(_label_id(label, labels, path, lineno))
    return {"text": texts, "label": ids}


def _read_agnews(path: Path) -> dict:
    texts, ids = [], []
    text = _read_text(path)
    # A description may legitimately be long; no field can be longer than the file itself.
    previous_limit = csv.field_size_limit()
    csv.field_size_limit(max(previous_limit, min(len(text) + 1, 2**31 - 1)))
    try:
        # strict: a stray or unclosed quote is an error here, not records silently merged into one field
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        lineno = 1  # the physical line a record starts on (a quoted field may span lines)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise DataError(f"{path}:{lineno}: malformed CSV ({err}); expected {FORMATS['agnews']}") from None
            if row:
                if len(row) != 3:
                    raise DataError(f"{path}:{lineno}: expected 3 columns (class index 1-4, title, "
                                    f"description), got {len(row)}")
                if row[0] not in {"1", "2", "3", "4"}:
                    raise DataError(f"{path}:{lineno}: unknown label {row[0]!r}; expected a class index 1-4")
                _text(f"{row[1]}{row[2]}", path, lineno, "title and description")
                # The original files escape newlines as a backslash; undo it so the tokenizer sees text.
                texts.append(f"{row[1]} {row[2]}".replace("\\", " "))
                ids.append(int(row[0]) - 1)
            lineno = reader.line_num + 1
    finally:
        csv.field_size_limit(previous_limit)
    return {"text": texts, "label": ids}


def _check_not_empty(ds: DatasetDict, where: str) -> DatasetDict:
    for split, part in ds.items():
        if len(part) == 0:
            raise DataError(f"{where}: the {split} split is empty; check the data files")
    return ds


def _agnews_hub_revision() -> str:  # pragma: no cover - needs the Hub
    try:
        return HfApi().dataset_info(AGNEWS_HUB_ID).sha or "unknown"
    except Exception:  # offline: the cached copy's revision is not known here
        return "unknown"


def _load_agnews_hub() -> Dataset:  # pragma: no cover - needs the Hub
    hub = datasets.load_dataset(AGNEWS_HUB_ID, split="test")
    return hub.cast(_features(DATASETS["agnews"].labels))


def _load_supervised(base: str, sep_token: str, data_dir, dev: bool = False) -> DatasetDict:
    spec = DATASETS[base]
    root = resolve_data_dir(data_dir) / spec.folder
    features = _features(spec.labels)
    if base == "agnews":
        path = root / "test.csv"
        if path.is_file():
            full = Dataset.from_dict(_read_agnews(path), features=features)
        elif _agnews_from_hub():
            try:
                full = _load_agnews_hub()
            except Exception as err:  # offline, or the Hub copy moved
                raise DataError(f"missing data file {path}; {AGNEWS_FROM_HUB_ENV}=1 asked for the Hub copy "
                                f"{AGNEWS_HUB_ID!r}, which failed ({err}).") from None
        else:
            _require(path, base)
        if len(full) == 0:
            raise DataError(f"{path}: the file holds no rows")
        split = full.train_test_split(test_size=0.1, seed=AGNEWS_SPLIT_SEED)
        ds = DatasetDict(train=split["train"], test=split["test"])
        if dev:  # the test split stays the course's; dev comes out of train
            carved = ds["train"].train_test_split(test_size=0.1, seed=AGNEWS_DEV_SEED)
            ds = DatasetDict(train=carved["train"], dev=carved["test"], test=ds["test"])
        return _check_not_empty(ds, str(path))
    splits = {}
    files = dict(zip(("train", "test"), spec.files), **({"dev": spec.dev_file} if dev else {}))
    for split, file in files.items():
        path = _require(root / file, base)
        data = _read_restaurant(path, sep_token) if base == "restaurant" else _read_acl(path)
        if not data["text"]:
            raise DataError(f"{path}: the {split} split is empty; check the file")
        splits[split] = Dataset.from_dict(data, features=features)
    return DatasetDict({k: splits[k] for k in ("train", "dev", "test") if k in splits})


def _few_shot(ds: DatasetDict) -> DatasetDict:
    """A fixed per-class sample of the training split; the dev and test splits are unchanged."""
    train = ds["train"].shuffle(seed=FEW_SHOT_SEED)
    taken: dict[int, int] = {}
    keep = []
    for i, label in enumerate(train["label"]):
        if taken.get(label, 0) < FEW_SHOT_PER_CLASS:
            taken[label] = taken.get(label, 0) + 1
            keep.append(i)
    return DatasetDict({**ds, "train": train.select(keep)})


def _merge(parts: list[DatasetDict]) -> DatasetDict:
    """Concatenate datasets, shifting label ids so that every dataset keeps its own classes."""
    names, shifted = [], {split: [] for split in parts[0]}
    for part in parts:
        offset = len(names)
        names += part["train"].features["label"].names
        for split in shifted:
            plain = part[split].cast_column("label", Value("int64"))
            shifted[split].append(plain.map(lambda b, k=offset: {"label": [x + k for x in b["label"]]},
                                            batched=True))
    features = _features(names)
    return DatasetDict({s: datasets.concatenate_datasets([p.cast(features) for p in ps])
                        for s, ps in shifted.items()})


def get_dataset(name, sep_token: str, data_dir=None, dev: bool = False) -> DatasetDict:
    """Load `name` (e.g. "restaurant_sup", "acl_fs") or a list of names (merged, labels kept apart).

    `sep_token` is the tokenizer's separator, placed between the aspect term and the sentence of
    restaurant examples. Data is read from `data_dir`, else $DATA_DIR, else ./data. `dev`: add a dev split
    (restaurant and acl: their dev file; AG News: 10 % of its training split, seed AGNEWS_DEV_SEED).
    """
    if isinstance(name, (list, tuple)):
        if not name:
            raise DataError(f"empty list of datasets; valid names: {', '.join(DATASET_NAMES)}")
        for n in name:  # every name checked before any file is read: an unknown one is named first
            _split_name(n)
        parts = [get_dataset(n, sep_token, data_dir, dev) for n in name]
        return parts[0] if len(parts) == 1 else _merge(parts)
    base, kind = _split_name(name)
    ds = _load_supervised(base, sep_token, data_dir, dev)
    return _few_shot(ds) if kind == "fs" else ds


def audit_dataset(name: str, tokenizer, data_dir=None) -> dict:
    """What a reader should know before training: sizes, label balance, token lengths, duplicates,
    and test texts that also occur in train (they inflate test scores)."""

    ds = get_dataset(name, tokenizer.sep_token, data_dir)
    labels = ds["train"].features["label"].names
    report = {"dataset": name}
    for split in ("train", "test"):
        texts, ids = list(ds[split]["text"]), list(ds[split]["label"])
        lengths = np.array([len(x) for x in tokenizer(texts, truncation=False)["input_ids"]])
        report[f"{split}_size"] = len(texts)
        report[f"{split}_labels"] = {labels[i]: int(c) for i, c in enumerate(np.bincount(ids, minlength=len(labels)))}
        report[f"{split}_tokens_median"] = int(np.median(lengths))
        report[f"{split}_tokens_p95"] = int(np.percentile(lengths, 95))
        report[f"{split}_over_128_tokens"] = int((lengths > 128).sum())
        report[f"{split}_duplicate_texts"] = len(texts) - len(set(texts))
    train_texts = set(ds["train"]["text"])
    report["test_texts_in_train"] = sum(t in train_texts for t in ds["test"]["text"])
    # Runs selected on dev read a dev split: a test text also in dev is seen by the selection, and a dev text
    # also in train makes the selection reward memory. Counted against the training split those runs use.
    try:
        with_dev = get_dataset(name, tokenizer.sep_token, data_dir, dev=True)
    except DataError:  # no dev file here: nothing to count
        with_dev = None
    if with_dev is not None:
        dev_texts, dev_train = set(with_dev["dev"]["text"]), set(with_dev["train"]["text"])
        report["dev_size"] = len(with_dev["dev"])
        report["test_texts_in_dev"] = sum(t in dev_texts for t in with_dev["test"]["text"])
        report["dev_texts_in_train"] = sum(t in dev_train for t in with_dev["dev"]["text"])
    report["example"] = {"text": ds["train"][0]["text"], "label": labels[ds["train"][0]["label"]]}
    return report


def describe_overlaps(report: dict) -> str:
    """One sentence from `audit_dataset`: test texts also in train, and (runs selected on dev) test texts also
    in dev and dev texts also in train."""
    text = (f"{report['dataset']}: {report['test_texts_in_train']} of {report['test_size']} test texts also occur "
            f"in the training split")
    if "dev_size" in report:
        text += (f"; {report['test_texts_in_dev']} of the test texts occur in the dev split that selects the "
                 f"reported evaluation, and {report['dev_texts_in_train']} of {report['dev_size']} dev texts occur in "
                 f"the training split" + (" (selection on dev partly rewards what was memorised)"
                                          if report["dev_texts_in_train"] else ""))
    return text + "."


def test_overlap_mask(name: str, sep_token: str, data_dir=None) -> list[bool]:
    """For each test example (in split order), whether its exact text also occurs in the training split."""
    ds = get_dataset(name, sep_token, data_dir)
    train_texts = set(ds["train"]["text"])
    return [t in train_texts for t in ds["test"]["text"]]
