"""Fetch once, run offline: data downloads through a local server and file:// mirrors, checksums, renames;
hub models from a local Hugging Face cache in the real layout; no network detected within seconds."""
import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
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
    from studykit.modeling import HUB_REVISIONS, _looks_like_hub_id
    models, _ = fetch.profile_needs("full")
    assert all(_looks_like_hub_id(m) for m in models)
    assert not _looks_like_hub_id("./my-model") and not _looks_like_hub_id("a/b/c")
    assert set(HUB_REVISIONS) <= set(models)
    json.dumps(HUB_REVISIONS)
