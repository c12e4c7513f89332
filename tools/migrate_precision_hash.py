"""One-off migration: move runs recorded with `precision="auto"` to the folder their config hashes to now.

Before, the configuration hash took `precision` as written, so "auto" was hashed as the word "auto" whatever
it picked; now it is hashed as the precision it resolved to (see `studykit.config`). A run that said "auto"
therefore belongs in the folder of the precision it actually ran in, which its summary.json records
("no" is Accelerate's name for fp32). For each such finished run this moves `<old hash>/seed<N>` to
`<new hash>/seed<N>` and rewrites `config_hash` in summary.json; nothing else changes (config.json keeps
`"precision": "auto"`, as it was run). A run whose folder name is not the old hash of its config.json (other
data on this machine, a hand-made copy) is left where it is and reported.

    python tools/migrate_precision_hash.py results/reference --data-dir /work/shared/data [--dry-run]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studykit.config import RunConfig, hash_of_config  # noqa: E402
from studykit.runs import run_folders, write_json_atomic  # noqa: E402

_ACCELERATE_NAMES = {"no": "fp32", "fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


def migrate(results_root, data_dir=None, dry_run: bool = False) -> dict:
    """Move every finished "auto" run under `results_root` to its resolved-precision hash folder.
    `data_dir` is used for runs whose config.json has none (the hash covers the data files' content).
    Returns {"moved": [(old, new)], "skipped": [(path, why)]}."""
    report = {"moved": [], "skipped": []}
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for folder in run_folders(results_root):
        stored = folder.config()
        if stored.get("precision") != "auto":
            continue  # an explicit precision hashes as it always did
        if not folder.is_done:
            report["skipped"].append((folder.path, "not finished: no summary.json records the precision used"))
            continue
        summary = folder.summary()
        resolved = _ACCELERATE_NAMES.get(summary.get("precision"))
        if resolved is None:
            report["skipped"].append((folder.path, f"unknown precision {summary.get('precision')!r} in summary"))
            continue
        # runs older than the dropout_kernel field used torch's dropout
        config = RunConfig(**{"dropout_kernel": "torch", **{k: v for k, v in stored.items() if k in fields}})
        if config.data_dir is None and data_dir is not None:
            config.data_dir = str(data_dir)
        old_hash, new_hash = folder.path.parent.name, hash_of_config(config, resolved)
        if hash_of_config(config, "auto") != old_hash:
            report["skipped"].append((folder.path, "its folder is not the old hash of its config.json here "
                                                   "(other data files?): left alone"))
            continue
        target = folder.path.parent.parent / new_hash / folder.path.name
        if target.exists():
            report["skipped"].append((folder.path, f"{target} exists already"))
            continue
        report["moved"].append((folder.path, target))
        if dry_run:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.path.rename(target)
        write_json_atomic(target / "summary.json", {**summary, "config_hash": new_hash})
        if not any(folder.path.parent.iterdir()):
            folder.path.parent.rmdir()
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_root", help="a results folder, e.g. results/reference")
    parser.add_argument("--data-dir", help="the data the runs used, for runs whose config.json has no data_dir")
    parser.add_argument("--dry-run", action="store_true", help="list the moves, change nothing")
    args = parser.parse_args(argv)
    report = migrate(args.results_root, args.data_dir, args.dry_run)
    for old, new in report["moved"]:
        print(f"{'would move' if args.dry_run else 'moved'} {old} -> {new}")
    for path, why in report["skipped"]:
        print(f"skipped {path}: {why}")
    print(f"{len(report['moved'])} moved, {len(report['skipped'])} skipped")


if __name__ == "__main__":
    main()
