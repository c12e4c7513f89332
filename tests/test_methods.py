"""Methods as objects: each one's trainable-parameter policy agrees with its parameter formula."""
import copy
import json

import pytest
import torch
from safetensors import safe_open
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, DistilBertConfig,
                          GPT2Config, LlamaConfig, MPNetConfig, RobertaConfig)

from studykit.adapters import count_parameters
from studykit.config import RunConfig
from studykit.methods import FullFineTuning, HoulsbyAdapters, LoRA, lora_parameter_count, method_for
from studykit.modeling import TINY_SHAPE, load_model_and_tokenizer
from studykit.results import load_results
from studykit.training import train_run

LAYERS, HIDDEN = TINY_SHAPE["num_hidden_layers"], TINY_SHAPE["hidden_size"]


def _model(tmp_path, kind="tiny-roberta"):
    return load_model_and_tokenizer(kind, 3, tmp_path / "cache")[0]


def _head(model):
    return sum(p.numel() for p in model.classifier.parameters())


def test_full_fine_tuning_trains_everything(tmp_path):
    model = FullFineTuning().apply(_model(tmp_path))
    counts = count_parameters(model)
    assert counts["trainable"] == counts["total"] and FullFineTuning().added_parameters(LAYERS, HIDDEN) == 0


@pytest.mark.parametrize("kind", ["tiny-bert", "tiny-roberta"])
def test_lora_trains_its_low_rank_weights_and_the_head(tmp_path, kind):
    base = _model(tmp_path, kind)
    total_before = sum(p.numel() for p in base.parameters())
    method = LoRA(rank=8, alpha=16)
    model = method.apply(base)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    lora = sum(v for n, v in trainable.items() if "lora_" in n)
    assert lora == method.added_parameters(LAYERS, HIDDEN) == lora_parameter_count(LAYERS, HIDDEN, 8) == 4 * LAYERS * 8 * HIDDEN
    assert sum(trainable.values()) == lora + _head(model)  # nothing else trains
    assert count_parameters(model)["total"] == total_before + lora


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=99,
            max_position_embeddings=64, num_labels=3)
CONFIGS = {"bert": BertConfig, "roberta": RobertaConfig, "mpnet": MPNetConfig}
LORA_NAMES = {"bert": ["query", "value"], "roberta": ["query", "value"], "mpnet": ["q", "v"]}


def _tiny(kind):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(CONFIGS[kind](**TINY)).eval()


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_one_lora_object_targets_each_familys_query_and_value(kind, tmp_path):
    method = LoRA(rank=4, alpha=8)  # the same object for every family
    base = _tiny(kind)
    ids = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = base(input_ids=ids).logits
    assert method.module_names(base) == LORA_NAMES[kind]
    model = method.apply(copy.deepcopy(base))
    lora = {n for n, p in model.named_parameters() if "lora_" in n}
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora} == set(LORA_NAMES[kind])
    assert sum(p.numel() for n, p in model.named_parameters() if n in lora) == method.added_parameters(2, 32)
    with torch.no_grad():  # B starts at zero: the adapted model is the base model at init
        assert torch.equal(model(input_ids=ids).logits, before)
    method.save(model, tmp_path / "lora.safetensors")
    with safe_open(str(tmp_path / "lora.safetensors"), framework="pt") as f:
        assert f.metadata()["target_modules"] == ",".join(LORA_NAMES[kind])  # BERT's: "query,value" as before


def test_lora_on_an_architecture_without_known_names_says_what_to_add():
    model = AutoModelForSequenceClassification.from_config(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=99))
    with pytest.raises(ValueError, match=r"target 'query': no module named 'query' or 'q' or 'q_lin' or 'q_proj' "
                                         r"in model type 'gpt2'.*LORA_TARGET_NAMES"):
        LoRA().apply(model)


def test_lora_finds_distilbert_and_decoder_projections():
    distil = AutoModelForSequenceClassification.from_config(DistilBertConfig(
        dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=99))
    assert LoRA().module_names(distil) == ["q_lin", "v_lin"]
    llama = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=99))
    assert LoRA().module_names(llama) == ["q_proj", "v_proj"]


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_the_memory_planner_counts_lora_on_each_family(kind):
    from studykit.memory.counting import count_model_parameters
    from studykit.memory.plan import method_of
    label, method = method_of(RunConfig("tiny-bert", "acl_sup", method="lora"))
    assert label == "LoRA r=8 on query, value"  # the plan's label, as before
    counts = count_model_parameters(CONFIGS[kind](**TINY), method)  # the run's own method object
    assert counts["trainable"] == LoRA().added_parameters(2, 32) + _head(_tiny(kind))


def test_houlsby_on_mpnet_matches_its_formula():
    method = HoulsbyAdapters(adapter_size=4, train_layer_norm=False)
    model = method.apply(_tiny("mpnet"))
    counts = count_parameters(model)
    assert counts["by_component"]["adapters"]["trainable"] == method.added_parameters(2, 32)
    assert counts["trainable"] == method.added_parameters(2, 32) + _head(model)


def test_houlsby_policy_matches_its_formula(tmp_path):
    method = HoulsbyAdapters(adapter_size=4, train_layer_norm=False)
    model = method.apply(_model(tmp_path))
    counts = count_parameters(model)
    assert counts["by_component"]["adapters"]["trainable"] == method.added_parameters(LAYERS, HIDDEN)
    assert counts["trainable"] == method.added_parameters(LAYERS, HIDDEN) + _head(model)


def test_method_for_reads_the_config():
    assert method_for(RunConfig("tiny-bert", "acl_sup")) == FullFineTuning()
    assert method_for(RunConfig("tiny-bert", "acl_sup", adapter_size=8)) == HoulsbyAdapters(8, True)
    assert method_for(RunConfig("tiny-bert", "acl_sup", method="lora", lora_rank=4)) == LoRA(4, 16)


def test_lora_run_saves_its_weights_and_loads_as_structured_columns(tmp_path, fixture_data):
    config = RunConfig("tiny-roberta", "restaurant_sup", method="lora", learning_rate=1e-2, epochs=1, max_steps=2,
                       batch_size=16, data_dir=fixture_data, results_dir=str(tmp_path), num_threads=1)
    summary = train_run(config)
    assert summary["trainable_params"] == lora_parameter_count(LAYERS, HIDDEN, 8) + 3 * HIDDEN + 3 + HIDDEN * HIDDEN + HIDDEN
    assert (config.run_dir / "lora.safetensors").stat().st_size == summary["checkpoint_bytes"]
    row = load_results(tmp_path).iloc[0]
    assert (row["training_method"], row["lora_rank"], row["label"]) == ("lora", 8, "tiny-roberta lora8 lr=0.01")
    assert json.loads((config.run_dir / "config.json").read_text())["method"] == "lora"


def test_warm_up_steps_are_rounded_up(tmp_path, fixture_data):
    # 2 steps at warmup_ratio 0.1: ceil(0.2) = 1 warm-up step, so the first step ends at the peak rate
    # (rounding down would skip warm-up and decay to half the rate after one step).
    config = RunConfig("tiny-bert", "restaurant_sup", epochs=1, max_steps=2, batch_size=16, learning_rate=1e-3,
                       log_every=1, data_dir=fixture_data, results_dir=str(tmp_path), num_threads=1)
    train_run(config)
    log = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log if r["split"] == "train"] == [pytest.approx(1e-3), 0.0]


def test_pooler_statistics_read_the_checkpoint(tmp_path, minilm):
    import utils
    stats = utils.pooler_statistics(minilm, tmp_path)
    # all-MiniLM-L6-v2 (a mean-pooling sentence encoder) ships a pooler with zero bias and small weights
    assert stats["bias_abs_max"] == 0.0 and 0 < stats["weight_std"] < stats["initializer_range"]
    assert utils.pooler_statistics("tiny-roberta", tmp_path) is None  # RoBERTa's head has no pooler


def test_describe_heads_names_a_frozen_pooler_and_a_trained_head_and_the_confound(tmp_path, minilm):
    import utils
    lines = utils.describe_heads([minilm, "tiny-roberta"], tmp_path)
    assert lines[0].startswith(f"{minilm} pooler: weight std") and "frozen in adapter and LoRA runs" in lines[0]
    assert lines[1] == "tiny-roberta: no pooler; the classification head's own dense layer trains in every method."
    assert "cannot be put on size alone" in lines[2] and len(lines) == 3
    assert len(utils.describe_heads(["tiny-roberta"], tmp_path)) == 1  # one kind of head: no confound to name


def test_the_planner_plans_mpnet_with_its_eager_attention(tmp_path, fixture_data):
    """MPNet has no sdpa attention in transformers: the planner traces the eager attention our trainer runs."""
    from transformers import AutoModel

    from studykit.memory import default_attention, plan_study
    from studykit.modeling import _tiny_tokenizer
    tokenizer = _tiny_tokenizer("roberta")
    config = MPNetConfig(**{**TINY, "vocab_size": len(tokenizer), "max_position_embeddings": 130})
    AutoModel.from_config(config).save_pretrained(tmp_path / "mpnet")
    tokenizer.save_pretrained(tmp_path / "mpnet")
    assert default_attention(config) == "eager" and default_attention(RobertaConfig()) == "sdpa"
    configs = [RunConfig(str(tmp_path / "mpnet"), "restaurant_sup", batch_size=16, data_dir=fixture_data, **kw)
               for kw in (dict(), dict(adapter_size=8), dict(method="lora"))]
    plan = plan_study(configs)
    assert list(plan["method"]) == ["full fine-tuning", "adapters m=8", "LoRA r=8 on query, value"]
    assert "note" not in plan or plan["note"].isna().all()
    assert (plan["est_peak_GB"] > 0).all()
