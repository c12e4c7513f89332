"""Fetch once, run offline: every model and dataset a profile needs, on a machine with network.

    python train.py fetch --profile full            # models into the HF cache, data into ./data
    python -m studykit.fetch --profile full --data-dir /scratch/data

Models go into the Hugging Face cache ($HF_HOME), safetensors weights plus config and tokenizer files only.
Datasets are downloaded from their original public sources, pinned to a commit, renamed to the names our
loaders expect and checked against sha256 values; a file that is already there with the right hash is kept.
At the end it prints what to export on compute nodes (HF_HUB_OFFLINE=1, HF_HOME, DATA_DIR).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATA_SOURCES", "DataFile", "fetch_data", "fetch_models", "profile_needs", "main"]

GITHUB_RAW = "https://raw.githubusercontent.com/"


@dataclass(frozen=True)
class DataFile:
    """One file our loaders read: where it goes under data/, where it comes from, and its sha256."""
    target: str          # path under the data folder, as studykit.data reads it
    urls: tuple          # tried in order; the first that gives the right bytes wins
    sha256: str


# The sha256 values are those of the files in the project's data copy (/work/shared/data, README there),
# which were extracted with `git show <commit>:<path>` at the commits pinned below and checked against the
# source trees' git blob hashes; so these URLs give the same bytes. AG News: torchtext's AG_NEWS URL (its
# recorded md5 d52ea96a97a2d943681189a97654912d is the md5 of our copy too), then the pinned fork our copy
# came from (that fork's HEAD has a truncated test.csv: never use an unpinned URL).
_ASC = GITHUB_RAW + "howardhsu/ASC_failure/380a817662d626ceecc2985d731efe633440ebca/asc/rest/"
_ACL = GITHUB_RAW + "allenai/scibert/06793f77d7278898159ed50da30d173cdc8fdea9/data/text_classification/citation_intent/"
DATA_SOURCES = {
    "restaurant": (
        DataFile("restaurant/train.json", (_ASC + "train.json",),
                 "c63942f9c384dc1c35a16e9cdd838622d610f1cb1ea58ef7fd095e966ed7aaa5"),
        DataFile("restaurant/test.json", (_ASC + "test_full.json",),   # renamed: test_full.json -> test.json
                 "7db632b9e004f4427341fbf66c9ee5303a5ffb10e05cb474e5d64dc46d190204"),
        DataFile("restaurant/dev.json", (_ASC + "dev.json",),
                 "5051f3c4b31c86c5d48ce3c654cc522194afacd8b87f2e0c90ebead04d8dafdd"),
    ),
    "acl": (
        DataFile("acl/train.jsonl", (_ACL + "train.txt",),               # renamed: .txt -> .jsonl
                 "58eef60d2bbfdabefc3de25191714f769db03134523ef67e87d864112c67908c"),
        DataFile("acl/test.jsonl", (_ACL + "test.txt",),
                 "749d083cc3141d54a2bf1475c02a5a1c020c664601d55fe2829bdf85f06db4bb"),
        DataFile("acl/dev.jsonl", (_ACL + "dev.txt",),
                 "bc456ac8caf40829dc2d3a44801a385ad8463c80682cbf002c19329b35812b5f"),
    ),
    "agnews": (
        DataFile("agnews/test.csv", (
            GITHUB_RAW + "mhjabreel/CharCnn_Keras/master/data/ag_news_csv/test.csv",
            GITHUB_RAW + "Shane-Neeley/CharCnn_Keras/03836ce08fce38daac53e9b4255ef16e0b9f6303/data/ag_news_csv/test.csv"),
            "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699"),
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mirrored(url: str, mirror: str | None) -> str:
    """`url` with the GitHub raw host replaced by `mirror` (a local server, file:// folder or proxy)."""
    if mirror and url.startswith(GITHUB_RAW):
        return mirror.rstrip("/") + "/" + url[len(GITHUB_RAW):]
    return url


def _download(url: str, dest: Path, timeout: float) -> None:
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_data(datasets, data_dir, mirror: str | None = None, timeout: float = 60.0, log=print) -> list[Path]:
    """Download the files of `datasets` (base names or study names like "acl_sup") into `data_dir`.

    A file already present with the right sha256 is kept; one with other content is an error (your copy is
    never overwritten). A download whose sha256 differs is discarded and the next source is tried.
    """
    bases = sorted({name.split("_")[0] for name in datasets})
    unknown = [b for b in bases if b not in DATA_SOURCES]
    if unknown:
        raise ValueError(f"no source known for dataset {unknown[0]!r}; valid: {sorted(DATA_SOURCES)}")
    root = Path(data_dir)
    written = []
    for base in bases:
        for spec in DATA_SOURCES[base]:
            dest = root / spec.target
            if dest.is_file():
                if _sha256(dest) == spec.sha256:
                    log(f"ok       {dest} (sha256 verified, kept)")
                    written.append(dest)
                    continue
                raise ValueError(f"{dest} exists with content other than the expected source's (sha256 "
                                 f"{spec.sha256[:12]}...); move it away to fetch the original, or keep using it "
                                 "knowingly: results are keyed by the data's content, so runs never mix")
            dest.parent.mkdir(parents=True, exist_ok=True)
            errors = []
            for url in spec.urls:
                url = _mirrored(url, mirror)
                try:
                    _download(url, dest, timeout)
                except OSError as err:  # URLError, HTTPError and socket timeouts are OSErrors
                    errors.append(f"{url}: {err}")
                    continue
                got = _sha256(dest)
                if got == spec.sha256:
                    log(f"fetched  {dest} <- {url} (sha256 verified)")
                    written.append(dest)
                    break
                dest.unlink()
                errors.append(f"{url}: sha256 {got[:12]}... is not the expected {spec.sha256[:12]}...")
            else:
                raise RuntimeError(f"could not fetch {spec.target}:\n  " + "\n  ".join(errors))
    return written


def fetch_models(models, log=print) -> dict:
    """Download each hub model (safetensors, config, tokenizer) into the HF cache; aliases and folders are
    skipped. Returns {model: local snapshot folder}."""
    from huggingface_hub import constants

    from .modeling import MODEL_ALIASES, hub_reachable, hub_snapshot
    found = {}
    for name in models:
        if name in MODEL_ALIASES or Path(name).expanduser().is_dir():
            log(f"local    {name} (built or found locally, nothing to fetch)")
            continue
        if not constants.HF_HUB_OFFLINE and not hub_reachable():
            raise RuntimeError(f"cannot reach {constants.ENDPOINT}: fetch models on a machine with network "
                               "(a login node), into the HF_HOME the compute nodes will use")
        path = hub_snapshot(name, local_files_only=False)
        if not any(Path(path).glob("*.safetensors")):
            raise RuntimeError(f"{name}: the Hub revision has no safetensors weights (only pickles, which we "
                               "never load); pin a revision that has them in studykit.modeling.HUB_REVISIONS")
        log(f"fetched  {name} -> {path}")
        found[name] = path
    return found


def profile_needs(profile: str, tasks=None) -> tuple[list[str], list[str]]:
    """The models and datasets a profile's tasks use, from `studykit.profiles.PROFILES`."""
    from .profiles import PROFILES
    tasks = tasks or sorted(PROFILES)
    models, datasets = [], []
    for task in tasks:
        if profile not in PROFILES[task]:
            raise ValueError(f"unknown profile {profile!r}; valid: {sorted(PROFILES[task])}")
        spec = PROFILES[task][profile]
        models += [m for m in spec["models"] if m not in models]
        datasets += [d for d in spec["runs"] if d not in datasets]  # runs: dataset -> its run settings
    return models, datasets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="train.py fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="full", help="profile whose models and data to fetch (default: full)")
    parser.add_argument("--models", nargs="+", help="these models instead of the profile's")
    parser.add_argument("--datasets", nargs="+", help="these datasets instead of the profile's (e.g. acl_sup)")
    parser.add_argument("--data-dir", default=None, help="where the data goes (default: $DATA_DIR, else ./data)")
    parser.add_argument("--skip-models", action="store_true", help="fetch only the data")
    parser.add_argument("--skip-data", action="store_true", help="fetch only the models")
    parser.add_argument("--mirror", default=os.environ.get("STUDYKIT_DATA_MIRROR"),
                        help=f"base URL (http://, file://) standing in for {GITHUB_RAW}, with the same paths "
                             "below it (default: $STUDYKIT_DATA_MIRROR)")
    args = parser.parse_args(argv)
    from .data import resolve_data_dir
    models, datasets = profile_needs(args.profile)
    models, datasets = args.models or models, args.datasets or datasets
    data_dir = resolve_data_dir(args.data_dir).resolve()
    try:
        if not args.skip_data:
            fetch_data(datasets, data_dir, mirror=args.mirror)
        if not args.skip_models:
            fetch_models(models)
    except (ValueError, RuntimeError) as err:
        print(f"fetch failed: {err}", file=sys.stderr)
        return 1
    from huggingface_hub import constants
    print("\nDone. On the compute nodes (no network), export:\n"
          f"  export HF_HUB_OFFLINE=1\n  export HF_HOME={Path(constants.HF_HOME).resolve()}\n"
          f"  export DATA_DIR={data_dir}"
          + (f"\n  export HF_HUB_CACHE={os.environ['HF_HUB_CACHE']}" if os.environ.get("HF_HUB_CACHE") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
