"""The memory estimator's inputs, validated like RunConfig's: a nonsense input is an error naming the input,
its value and what is valid, never a negative or impossible estimate (README "What happens when …")."""
import pytest

import utils
from studykit.memory import estimate_memory
from studykit.memory.catalog import get_config
from studykit.memory.estimate import usable_positions


@pytest.mark.parametrize("model, assumptions, message", [
    (-1.25e8, dict(activations=0), r"a parameter count must be a whole number >= 1, got -125000000.0"),
    (1.5, dict(activations=0), r"a parameter count must be a whole number >= 1, got 1.5"),
    (1e8, dict(activations=-1e12), r"activations must be None \(from the architecture\), 'weights' or bytes >= 0, "
                                   r"got -1000000000000.0"),
    (1e8, dict(activations=0, overhead=-5), r"overhead must be True .*, False or bytes >= 0, got -5"),
    (1e8, dict(activations=0, num_gpus=2.5), r"num_gpus must be an int >= 1, got 2.5"),
    ("roberta-base", dict(batch_size=2.5), r"batch_size must be an int >= 1, got 2.5"),
    ("roberta-base", dict(batch_size=0), r"batch_size must be an int >= 1, got 0"),
    ("roberta-base", dict(seq_len=0), r"seq_len must be an int >= 1, got 0"),
    ("roberta-base", dict(peft="lora", lora_rank=0), r"lora_rank must be an int >= 1, got 0"),
    ("roberta-base", dict(seq_len=100000), r"seq_len 100000 is longer than 'roberta-base' has positions for \(512\); "
                                           r"choose seq_len <= 512, or pass seq_len_beyond_positions=True"),
])
def test_nonsense_inputs_are_refused_by_name(model, assumptions, message):
    with pytest.raises(ValueError, match=message):
        estimate_memory(model, **assumptions)


def test_the_usable_positions_of_roberta_and_bert_and_the_explicit_way_past_them():
    assert usable_positions(get_config("roberta-base")) == 512  # 514 embeddings, 2 before the first token
    assert usable_positions(get_config("bert-base-uncased")) == 512
    small = dict(batch_size=1, device="cpu", scheme="fp32")
    assert estimate_memory("roberta-mini", seq_len=512, **small)["total"] > 0
    longer = estimate_memory("roberta-mini", seq_len=1024, seq_len_beyond_positions=True, **small)
    assert longer["activations"] > estimate_memory("roberta-mini", seq_len=512, **small)["activations"]


def test_the_explorer_shows_why_it_cannot_estimate():
    explorer = utils.memory_explorer(model="roberta-mini", live=False, batch_size=1, seq_len=32, device="cpu")
    explorer.controls["seq_len"].value = 8192
    assert "Cannot estimate:" in explorer.summary.value and "seq_len 8192 is longer than" in explorer.summary.value


def test_a_study_plan_notes_a_cell_longer_than_its_models_positions_instead_of_failing(fixture_data):
    config = utils.RunConfig("roberta-base", "restaurant_sup", max_length=2048, data_dir=fixture_data)
    plan = utils.plan_study([config], gpus={"80 GB": 80e9}, device="cuda")
    assert "longer than this roberta model has positions for (512)" in plan["note"][0]
