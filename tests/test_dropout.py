"""The int16-mask dropout (studykit/dropout.py): same distribution and scaling as torch's, seeded, a correct
gradient, attention equal to transformers' eager attention, and a model whose every dropout is swapped."""
import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification
from transformers.models.bert.modeling_bert import eager_attention_forward

import utils
from studykit import training
from studykit.dropout import (ATTENTION_NAME, Int16MaskDropout, attention_with_int16_dropout, int16_dropout,
                              int16_keep_mask, use_int16_dropout)
from studykit.modeling import build_tiny_model


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    mask = int16_keep_mask((1000, 1001), p)  # an odd size: the last 64-bit draw is used in part
    assert mask.dtype == torch.bool and mask.shape == (1000, 1001)
    assert abs(mask.float().mean().item() - (1 - p)) < 0.002  # 4.5 standard errors at 1e6 elements
    # lanes of one 64-bit draw are independent: neighbours agree as often as chance says
    both = (mask[:, 0::2][:, :500] & mask[:, 1::2][:, :500]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 0.003


def test_dropout_scales_kept_values_and_is_the_identity_in_eval():
    torch.manual_seed(1)
    x = torch.randn(200, 300)
    out = int16_dropout(x, 0.1, training=True)
    kept = out != 0
    assert torch.allclose(out[kept], x[kept] / 0.9)
    assert int16_dropout(x, 0.1, training=False) is x and int16_dropout(x, 0.0, training=True) is x
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        int16_dropout(x, 1.0)


def test_masks_come_from_torchs_seeded_generator():
    torch.manual_seed(3)
    a = int16_keep_mask((64, 64), 0.1)
    torch.manual_seed(3)
    b = int16_keep_mask((64, 64), 0.1)
    c = int16_keep_mask((64, 64), 0.1)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_the_gradient_is_the_scaled_mask():
    x = torch.randn(50, 40, requires_grad=True)
    out = Int16MaskDropout(0.2)(x)
    out.sum().backward()
    assert torch.allclose(x.grad, (out != 0).float() / 0.8)


def test_attention_equals_eager_attention_when_nothing_is_dropped():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    mask = torch.zeros(2, 1, 7, 7)
    mask[0, :, :, 5:] = torch.finfo(torch.float32).min  # padding in the first example
    module = nn.Module()
    module.train()
    # p below 1/65536 rounds to "drop nothing", so the training path runs with an all-keep mask
    ours, _ = attention_with_int16_dropout(module, q, k, v, mask, scaling=0.3, dropout=1e-7)
    eager, _ = eager_attention_forward(module, q, k, v, mask, scaling=0.3, dropout=0.0)
    assert torch.allclose(ours, eager, atol=1e-6)
    module.eval()  # evaluation goes through torch's fused attention, same numbers
    fused, _ = attention_with_int16_dropout(module, q, k, v, mask, scaling=0.3, dropout=0.0)
    assert torch.allclose(fused, eager, atol=1e-5)


def test_a_model_gets_every_dropout_swapped_and_evaluates_as_before(tmp_path):
    path = build_tiny_model("tiny-bert", tmp_path / "tiny")
    torch.manual_seed(0)
    plain = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    swapped = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    swapped.load_state_dict(plain.state_dict())
    use_int16_dropout(swapped)
    assert not any(type(m) is nn.Dropout for m in swapped.modules())
    assert any(isinstance(m, Int16MaskDropout) for m in swapped.modules())
    assert swapped.config._attn_implementation == ATTENTION_NAME
    ids = torch.randint(5, 90, (3, 12))
    attention = torch.ones_like(ids)
    attention[0, 8:] = 0
    plain.eval(), swapped.eval()
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids, attention_mask=attention).logits,
                              swapped(input_ids=ids, attention_mask=attention).logits, atol=1e-5)
    swapped.train()  # training draws masks: two forward passes differ
    assert not torch.equal(swapped(input_ids=ids).logits, swapped(input_ids=ids).logits)


@pytest.mark.parametrize("method", [dict(adapter_size=8, learning_rate=1e-2, task="task3"),
                                    dict(method="lora", learning_rate=1e-2, task="task3")])
def test_runs_record_the_dropout_they_used_and_peft_dropout_is_swapped_too(tmp_path, fixture_data, monkeypatch,
                                                                              method):
    swapped = []
    original = training.use_int16_dropout

    def spy(model):
        original(model)
        swapped.append(not any(type(m) is nn.Dropout for m in model.modules()))
        return model
    monkeypatch.setattr(training, "use_int16_dropout", spy)
    config = utils.RunConfig("tiny-roberta", "restaurant_sup", epochs=1, batch_size=16, data_dir=fixture_data,
                             results_dir=str(tmp_path / "results"), num_threads=1, dropout_kernel="int16",
                             precision="bf16",
                             **method)
    summary = utils.train_run(config)
    assert swapped == [True]
    assert summary["dropout_kernel"] == "int16" and summary["dropout_kernel_reason"] == "set explicitly"
    assert summary["pad_to_multiple_of"] is None  # on CPU, even in bf16: padding to 8 only adds tokens there
    assert summary["attention"] == ATTENTION_NAME and summary["attention_reason"].startswith("int16 dropout")
    torch_run = utils.train_run(utils.RunConfig(**{**config.__dict__, "dropout_kernel": "torch"}))
    assert torch_run["dropout_kernel"] == "torch" and torch_run["f1_macro"] >= 0
    assert torch_run["attention"] == "sdpa" and torch_run["attention_reason"].startswith("the model's default")


@pytest.mark.parametrize("precision, expected", [("bf16", "int16"), ("fp32", "torch")])
def test_auto_dropout_on_cpu_follows_the_runs_precision(monkeypatch, precision, expected):
    from studykit.dropout import resolve_dropout_kernel
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    kernel, reason = resolve_dropout_kernel("auto", precision)
    assert kernel == expected and reason.startswith(f"auto: {precision} on CPU")
    assert resolve_dropout_kernel("int16", "fp32") == ("int16", "set explicitly")
    assert resolve_dropout_kernel("torch", "bf16") == ("torch", "set explicitly")


def test_on_a_gpu_auto_dropout_is_torchs(monkeypatch):
    from studykit.dropout import resolve_dropout_kernel
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert resolve_dropout_kernel("auto", "bf16")[0] == "torch"


@pytest.mark.parametrize("has_bf16, expected", [(True, "int16"), (False, "torch")])
def test_auto_dropout_follows_the_cpu_kind_through_the_precision(monkeypatch, fixture_data, has_bf16, expected):
    from studykit import hardware
    monkeypatch.setattr(hardware, "_cpu_bf16_features", lambda: ("AVX-512 BF16",) if has_bf16 else ())
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    config = utils.RunConfig("tiny-bert", "restaurant_sup", data_dir=fixture_data)  # precision and dropout "auto"
    assert config.resolved_dropout_kernel == expected

