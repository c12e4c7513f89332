"""The full-size rehearsal's quick mode: every full-profile cell for 2 steps at batch 64 = 4 x 16 under bf16,
through the engine, and one cell through 2 CPU processes; plus the shipped shapes and tokenizers."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import rehearsal  # noqa: E402


@pytest.mark.parametrize("name,params", [("roberta-base", 124_645_632), ("bert-base-uncased", 109_482_240),
                                         ("allenai/scibert_scivocab_uncased", 109_918_464)])
def test_shipped_configs_have_the_published_sizes(name, params):
    """Encoder parameter counts of the published checkpoints (embeddings + 12 layers + pooler)."""
    import transformers
    config = transformers.AutoConfig.for_model(**rehearsal.model_config(name))
    with __import__("torch").device("meta"):
        model = transformers.AutoModel.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == params


def test_every_full_profile_cell_is_listed():
    labels = [label for label, _ in rehearsal.cells()]
    assert len(labels) == 9 + 6 and len(set(labels)) == 15   # 3 models x 3 datasets; roberta adapters x 3 x 2 lr


@pytest.mark.parametrize("name", ["roberta-base", "allenai/scibert_scivocab_uncased"])
def test_tokenizer_has_the_models_vocabulary_and_specials(name, fixture_data):
    config = rehearsal.model_config(name, quick=True)
    tok = rehearsal.build_tokenizer(config, Path(fixture_data))
    assert len(tok) == config["vocab_size"] and tok.pad_token_id == config["pad_token_id"]
    ids = tok("The food was great")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and max(ids) < config["vocab_size"]
    if config["model_type"] == "roberta":
        assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2, 50264)


@pytest.mark.timeout(600)
def test_quick_rehearsal_runs_every_cell_and_two_processes(tmp_path, fixture_data):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PROGRESS": "text"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "rehearsal.py"), "--quick", "--threads", "1",
                           "--data-dir", fixture_data, "--scratch", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["cells_ok"] == 15 and line["cells_failed"] == 0
    assert {c["batch"] for c in line["cells"]} == {"64 = 1 x 16 x 4"} and {c["precision"] for c in line["cells"]} == {"bf16"}
    assert all(c["steps"] == 2 for c in line["cells"])
    assert line["two_process"]["num_processes"] == 2 and line["two_process"]["gradient_accumulation"] == 2
