"""The memory estimator: the report's numbers, the standard accountings, exact parameter counts,
agreement with measurement on CPU, and the explorer widgets driven from Python."""
import math

import pytest
import torch

from studykit import memory as M

torch.set_num_threads(1)


# --- the report's accounting ----------------------------------------------------------------------
def test_report_preset_full_is_30_gb():
    full = M.estimate_memory(3e9, preset="report")
    assert full["weights"] == 6e9 and full["gradients"] == 6e9
    assert full["optimizer_state"] == 12e9 and full["activations"] == 6e9
    assert full["master_weights"] == 0 and full["overhead"] == 0
    assert full["total"] == 3.0e10


def test_report_preset_peft_is_12_12_gb_and_saves_60_percent():
    full = M.estimate_memory(3e9, preset="report")
    peft = M.estimate_memory(3e9, preset="report", peft_fraction=0.005)
    # frozen 3B in fp16 (6 GB) + 15M adapter parameters x (2 + 2 + 4) B (0.12 GB) + activations 6 GB
    assert peft["total"] == 12.12e9
    assert full["total"] - peft["total"] == 17.88e9
    assert (full["total"] - peft["total"]) / full["total"] == pytest.approx(0.596)
    assert round(100 * (1 - peft["total"] / full["total"])) == 60


def test_components_and_total_keys():
    e = M.estimate_memory("llama-3.2-3b")
    assert set(e) == set(M.COMPONENTS) | {"total"}
    assert e["total"] == sum(e[k] for k in M.COMPONENTS)


# --- bytes per parameter --------------------------------------------------------------------------
def test_zero_16_bytes_and_hf_megatron_18_bytes_per_parameter():
    zero = M.bytes_per_parameter("mixed", "adamw")
    assert (zero["weights"], zero["gradients"], zero["master_weights"], zero["optimizer_state"]) == (2, 2, 4, 8)
    assert zero["total"] == 16
    assert M.bytes_per_parameter("mixed_fp32_grads", "adamw")["total"] == 18  # fp32 gradients: +2 B
    assert M.bytes_per_parameter("fp32", "adamw")["total"] == 16
    assert M.bytes_per_parameter("bf16", "adamw")["total"] == 8  # the report's 2 + 2 + 4
    assert M.bytes_per_parameter("mixed", "sgd_momentum")["total"] == 12


def test_weight_and_state_bytes_scale_with_exact_count():
    n = M.count_model_parameters("llama-3.2-3b")["total"]
    e16 = M.estimate_memory("llama-3.2-3b", precision="mixed", overhead=False)
    e18 = M.estimate_memory("llama-3.2-3b", precision="mixed_fp32_grads", overhead=False)
    assert e16["total"] - e16["activations"] == 16 * n
    assert e18["total"] - e18["activations"] == 18 * n


def test_optimizers():
    n = M.count_model_parameters("roberta-base")["total"]
    st = lambda opt: M.estimate_memory("roberta-base", precision="fp32", optimizer=opt)["optimizer_state"]
    assert st("adamw") == 8 * n and st("sgd_momentum") == 4 * n
    assert 2 * n < st("adam_8bit") < 2.1 * n  # two 8-bit moments + block scales (+ small tensors in fp32)
    assert st("adafactor") < 0.05 * n  # rows + columns per matrix


# --- exact parameter counts of the shipped configurations (built on the meta device) --------------
@pytest.mark.parametrize("name,expected", [
    ("llama-3.2-3b", 3_212_749_824),      # model card 3.21B; embeddings tied, counted once
    ("qwen2.5-3b", 3_085_938_688),        # model card 3.09B (2.77B non-embedding); tied
    ("open-llama-3b", 3_426_473_600),     # untied output layer
    ("stablelm-3b-4e1t", 2_795_443_200),  # model card: 2,795,443,200
    ("roberta-base", 124_647_170),        # with a 2-label classification head
])
def test_shipped_parameter_counts(name, expected):
    assert M.count_model_parameters(name)["total"] == expected


def test_llama_count_by_hand():
    h, f, L, V, kv = 3072, 8192, 28, 128256, 8 * 128
    layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    assert M.count_model_parameters("llama-3.2-3b")["total"] == L * layer + h + V * h


def test_lora_counted_exactly_on_the_model():
    c = M.count_model_parameters("llama-3.2-3b", peft="lora", lora_rank=16)
    # r·(in + out) per targeted Linear: q_proj 3072 -> 3072, v_proj 3072 -> 1024, 28 layers
    assert c["trainable"] == 28 * 16 * ((3072 + 3072) + (3072 + 1024)) == 4_587_520
    assert c["total"] == 3_212_749_824 + c["trainable"]
    allc = M.count_model_parameters("llama-3.2-3b", peft="lora", lora_rank=8, lora_targets=["all-linear"])
    per_layer = (3072 + 3072) + 2 * (3072 + 1024) + (3072 + 3072) + 3 * (3072 + 8192)
    assert allc["trainable"] == 28 * 8 * per_layer


def test_lora_on_an_encoder_keeps_the_head_trainable():
    c = M.count_model_parameters("roberta-base", peft="lora", lora_rank=16)
    lora, head = 12 * 2 * 16 * (768 + 768), 768 * 768 + 768 + 768 * 2 + 2  # query and value; dense + out_proj
    assert c["trainable"] == lora + head == 1_181_954
    # peft's modules_to_save trains a copy of the head and keeps the frozen original
    assert c["total"] == 124_647_170 + lora + head


def test_adapters_from_the_real_module():
    c = M.count_model_parameters("roberta-base", peft="adapter", bottleneck_size=64)
    adapters = 2 * 12 * (2 * 64 * 768 + 64 + 768)
    assert adapters == 2_379_264
    assert c["total"] == 124_647_170 + adapters
    # trainable: adapters + LayerNorms (25 x 2 x 768) + classification head (592,130)
    assert c["trainable"] == adapters + 25 * 2 * 768 + 592_130


# --- activations ----------------------------------------------------------------------------------
def test_korthikanti_formula_for_a_gpt_style_layer():
    # roberta-base's layer is the GPT layer of Korthikanti et al. (LayerNorm, GeLU MLP of 4h, dropout,
    # no GQA): with 16-bit activations, 1-byte masks and eager attention we must get 34sbh + 5as²b.
    b, s = 4, 512
    terms = M.activation_terms("roberta-base", b, s, precision="mixed", memory_efficient_attention=False,
                               device="cuda")
    assert sum(v for _, v in terms["per_layer"]) == M.korthikanti_layer_bytes("roberta-base", b, s)
    assert M.korthikanti_layer_bytes("roberta-base", b, s) == s * b * 768 * (34 + 5 * 12 * s / 768)


def test_activation_options_behave():
    kw = dict(batch_size=4, seq_len=2048, overhead=False)
    eager = M.estimate_memory("llama-3.2-3b", memory_efficient_attention=False, **kw)["activations"]
    flash = M.estimate_memory("llama-3.2-3b", memory_efficient_attention=True, **kw)["activations"]
    ckpt = M.estimate_memory("llama-3.2-3b", checkpointing=True, **kw)["activations"]
    assert ckpt < flash / 4 and flash < eager / 2  # b=4, s=2048: 6.9 vs 34.5 vs 104 GB
    lora = M.estimate_memory("llama-3.2-3b", peft="lora", **kw)["activations"]
    assert lora < flash  # frozen Linear layers do not keep their inputs
    # doubling the batch doubles the activations
    double = M.estimate_memory("llama-3.2-3b", batch_size=8, seq_len=2048, overhead=False)["activations"]
    assert double == pytest.approx(2 * flash, rel=1e-9)


def test_zero_sharding():
    kw = dict(overhead=False, num_gpus=8)
    z = [M.estimate_memory("llama-3.2-3b", zero_stage=k, **kw) for k in range(4)]
    assert z[1]["optimizer_state"] == pytest.approx(z[0]["optimizer_state"] / 8, abs=1)
    assert z[1]["master_weights"] == pytest.approx(z[0]["master_weights"] / 8, abs=1)
    assert z[1]["gradients"] == z[0]["gradients"] and z[2]["gradients"] == pytest.approx(z[0]["gradients"] / 8, abs=1)
    assert z[2]["weights"] == z[0]["weights"] and z[3]["weights"] == pytest.approx(z[0]["weights"] / 8, abs=1)
    assert z[0]["activations"] == z[3]["activations"]
    assert z[0]["total"] > z[1]["total"] > z[2]["total"] > z[3]["total"]


def test_overhead_and_errors():
    e = M.estimate_memory("roberta-base")
    rest = e["total"] - e["overhead"]
    assert e["overhead"] == int(M.CUDA_CONTEXT_BYTES + M.ALLOCATOR_FRACTION * rest)
    assert M.estimate_memory("roberta-base", device="cpu")["overhead"] == 0
    with pytest.raises(TypeError, match="unknown assumption"):
        M.estimate_memory("roberta-base", batchsize=4)
    with pytest.raises(ValueError, match="no architecture"):
        M.estimate_memory(3e9)
    with pytest.raises(ValueError, match="unknown model name"):
        M.estimate_memory("llama-7b")
    with pytest.raises(ValueError, match="unknown precision"):
        M.estimate_memory("roberta-base", precision="fp8")


def test_gpus_that_fit():
    assert M.gpus_that_fit(7e9) == list(M.GPUS)
    assert M.gpus_that_fit(30e9) == ["40 GB (A100 40GB)", "80 GB (A100/H100 80GB)"]
    assert M.gpus_that_fit(100e9) == []


# --- estimate vs measurement (CPU) ----------------------------------------------------------------
@pytest.mark.parametrize("case", M.validation_cases("fast"), ids=lambda c: "-".join(
    str(v) for v in (c["model"], c["peft"] or "full", c.get("precision", "fp32"), c.get("optimizer", "adamw"),
                     c.get("attn_implementation", "eager"), c["batch_size"], c["seq_len"])))
def test_estimate_matches_measurement(case):
    row = M.validate_estimates([case]).iloc[0]
    assert abs(row.activations_err_pct) <= 100 * M.ACTIVATION_TOLERANCE, row.to_dict()
    assert abs(row.total_err_pct) <= 100 * M.TOTAL_TOLERANCE, row.to_dict()


def test_measured_components_are_consistent():
    m = M.measure_memory("llama-mini", batch_size=2, seq_len=32, optimizer="adamw")
    n = M.count_model_parameters("llama-mini")["total"]
    assert m["weights"] == 4 * n and m["gradients"] == 4 * n
    assert 8 * n <= m["optimizer_state"] <= 8 * n + 4 * 100  # + one step counter per tensor
    assert m["total"] == sum(m[k] for k in M.COMPONENTS)
    a = M.measure_memory("roberta-mini", batch_size=2, seq_len=32, peft="adapter")
    c = M.count_model_parameters("roberta-mini", peft="adapter")
    assert a["gradients"] == 4 * c["trainable"] and a["weights"] == 4 * c["total"]


# --- the widgets, driven from Python --------------------------------------------------------------
def test_explorer_updates_when_a_control_moves():
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    box = M.memory_explorer("llama-3.2-3b", batch_size=4, seq_len=512)
    before = box.summary.value
    assert "Full fine-tuning" in before and "fits" in before
    box.controls["batch_size"].value = 16
    after = box.summary.value
    assert after != before
    box.controls["peft_method"].value = "adapter"
    box.controls["peft_size"].value = 64
    assert "adapters m=64" in box.summary.value
    box.controls["zero_stage"].value = 3
    box.controls["num_gpus"].value = 8
    three = box.summary.value
    assert three != after


def test_summary_text_and_figure(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    breakdowns, text = M.memory_summary("roberta-base", "lora", 8, batch_size=8, seq_len=128)
    assert len(breakdowns) == 2 and "Saving" in text
    fig = M.plot_memory_breakdown(breakdowns, save_to=tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000
    table = M.breakdown_table(breakdowns)
    assert list(table.index) == [*M.COMPONENTS, "total"]
    assert math.isclose(table.iloc[:-1].sum().iloc[0], table.loc["total"].iloc[0], abs_tol=0.05)
    fig.clf()
