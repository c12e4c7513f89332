"""Random subsets of the real data files, in their own formats, so every side trains the same examples;
`repeat` makes every example long (the fixed-length runs truncate them all to max_length)."""
from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path


def _write_restaurant(src: Path, out: Path, n_train: int, n_eval: int, rng: random.Random, repeat: int = 1):
    for file, n in (("train.json", n_train), ("test.json", n_eval)):
        items = json.loads((src / file).read_text())
        keys = rng.sample(sorted(items), min(n, len(items)))
        chosen = {k: items[k] for k in keys}
        if repeat > 1:  # long examples: the sentence repeated (fixed-length mode)
            chosen = {k: {**v, "sentence": " ".join([v["sentence"]] * repeat)} for k, v in chosen.items()}
        (out / file).write_text(json.dumps(chosen))


def _write_acl(src: Path, out: Path, n_train: int, n_eval: int, rng: random.Random, repeat: int = 1):
    for file, n in (("train.jsonl", n_train), ("test.jsonl", n_eval)):
        rows = [json.loads(line) for line in (src / file).read_text().splitlines() if line.strip()]
        rows = rng.sample(rows, min(n, len(rows)))
        (out / file).write_text("".join(json.dumps({**r, "text": " ".join([r["text"]] * repeat)}) + "\n"
                                        for r in rows))


def _write_agnews(src: Path, out: Path, n_train: int, n_eval: int, rng: random.Random, repeat: int = 1):
    # The data module splits agnews' test.csv 9:1 (ceil(10 %) to test), so choose the row count that leaves
    # exactly n_train training rows; the test part is then about a ninth of n_train (n_eval is ignored).
    rows = list(csv.reader((src / "test.csv").open(newline="", encoding="utf-8")))
    if n_train < len(rows) - math.ceil(0.1 * len(rows)):
        total = next(r for r in range(n_train, 2 * n_train + 20) if r - math.ceil(0.1 * r) == n_train)
        rows = rng.sample(rows, total)
    with (out / "test.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows([r[0], r[1], " ".join([r[2]] * repeat)] for r in rows)


def write_subset(src_dir: Path, out_dir: Path, dataset: str, n_train: int, n_eval: int, seed: int = 0,
                 repeat: int = 1) -> Path:
    """Copy a random subset of a dataset's raw files (same formats) to `out_dir/<dataset folder>/`."""
    base = dataset.rsplit("_", 1)[0]
    writers = {"restaurant": _write_restaurant, "acl": _write_acl, "agnews": _write_agnews}
    if base not in writers:
        raise ValueError(f"no subset writer for dataset {dataset!r}; valid: restaurant_sup, acl_sup, agnews_sup")
    out = out_dir / base
    out.mkdir(parents=True, exist_ok=True)
    writers[base](src_dir / base, out, n_train, n_eval, random.Random(seed), repeat)
    return out_dir
