"""The memory estimator: the report's numbers, the standard accountings, exact parameter counts,
the traced activation count on several architectures, the autocast scheme, agreement with
measurement on CPU, the study planner, and the explorer (live and static) driven from Python."""
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
    # our trainer (Accelerate autocast): fp32 weights 4 + fp32 grads 4 + AdamW 8, no separate master copy
    auto = M.bytes_per_parameter("autocast", "adamw")
    assert (auto["weights"], auto["gradients"], auto["master_weights"], auto["optimizer_state"]) == (4, 4, 0, 8)


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
    c = M.count_model_parameters("roberta-base", peft="adapter", adapter_size=64)
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
    # doubling the batch doubles the activations (but for a few tensors shared by the batch: RoPE tables)
    double = M.estimate_memory("llama-3.2-3b", batch_size=8, seq_len=2048, overhead=False)["activations"]
    assert double == pytest.approx(2 * flash, rel=1e-4)


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


def test_held_out_cases_are_marked_and_checked():
    held = [c for c in M.validation_cases("fast") if c.get("held_out")]
    assert {c["model"] for c in held} >= {"qwen2-mini", "distilbert-mini", "bert-large-slice", "gpt2-mini"}
    assert any(c.get("precision") == "autocast" for c in held)


# --- the traced count ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2-mini", "distilbert-mini", "t5-mini", "qwen2-mini"])
def test_traced_count_builds_any_architecture(name):
    """Decoders, encoders and encoder-decoders the closed form does not know are counted by tracing."""
    full = M.estimate_memory(name, precision="fp32", device="cpu", batch_size=2, seq_len=32)
    lora = M.estimate_memory(name, precision="fp32", device="cpu", batch_size=2, seq_len=32, peft="lora")
    assert 0 < lora["activations"] < full["activations"]  # frozen Linears keep no inputs
    assert 0 < lora["gradients"] < full["gradients"] / 10
    assert full["activations"] * 2 == pytest.approx(
        M.estimate_memory(name, precision="fp32", device="cpu", batch_size=4, seq_len=32)["activations"], rel=0.01)


def test_traced_count_agrees_with_the_closed_form_where_both_exist():
    # CUDA accounting (1-byte masks, fused SDPA): the formula's assumptions; within its stated 1 %
    for name, attn in (("roberta-mini", "eager"), ("roberta-mini", "sdpa"), ("llama-mini", "eager"),
                       ("llama-mini", "sdpa"), ("qwen2-mini", "sdpa"), ("bert-large-slice", "eager")):
        kw = dict(batch_size=4, seq_len=128, precision="mixed", device="cuda", attn_implementation=attn,
                  memory_efficient_attention=attn == "sdpa")
        traced = M.estimate_memory(name, **kw)["activations"]
        formula = M.estimate_memory(name, activations_from="formula", **kw)["activations"]
        assert formula == pytest.approx(traced, rel=M.ACTIVATION_TOLERANCE), (name, attn)


def test_closed_form_counts_berts_pooler_input_only_when_trained():
    kw = dict(batch_size=2, seq_len=64, precision="fp32", device="cpu", attn_implementation="eager",
              memory_efficient_attention=False)
    for peft in (None, "lora", "adapter"):
        traced = M.estimate_memory("bert-large-slice", peft=peft, **kw)["activations"]
        formula = M.estimate_memory("bert-large-slice", peft=peft, activations_from="formula", **kw)["activations"]
        assert formula == pytest.approx(traced, rel=0.002), peft


def test_cpu_sdpa_with_dropout_keeps_the_probabilities_cuda_does_not():
    t = lambda attn, dev: M.traced_activations("roberta-mini", 4, 128, "fp32", attn, dev)["activations"]
    assert t("sdpa", "cpu") == t("eager", "cpu")  # math fallback: same tensors as eager
    assert t("sdpa", "cuda") < 0.8 * t("eager", "cuda")  # fused kernel: no s² term
    assert t("eager", "cuda") < t("eager", "cpu")  # 1-byte dropout masks on CUDA


def test_autocast_keeps_16_bit_weight_copies_among_the_activations():
    kw = dict(batch_size=2, seq_len=64, device="cpu", attn_implementation="sdpa", overhead=False)
    auto = M.estimate_memory("llama-mini", precision="autocast", **kw)
    pure = M.estimate_memory("llama-mini", precision="bf16", **kw)
    n = M.count_model_parameters("llama-mini")["total"]
    assert auto["weights"] == 4 * n and auto["gradients"] == 4 * n and auto["master_weights"] == 0
    # the Linear weights' bf16 copies (all but embeddings and norms) are kept for backward
    linear = n - 2 * 4096 * 256 - (2 * 4 + 1) * 256
    assert auto["activations"] - pure["activations"] >= 2 * linear * 0.99


def test_an_architecture_that_cannot_be_built_gets_a_clear_error():
    from transformers import AutoConfig
    with pytest.raises(ValueError, match="cannot trace|Unrecognized|does not"):
        M.estimate_memory(AutoConfig.for_model("clip"), batch_size=1, seq_len=8)
    with pytest.raises(ValueError, match="closed-form count knows"):
        M.architecture("gpt2-mini")
    with pytest.raises(ValueError, match="use peft='lora'"):
        M.estimate_memory("gpt2-mini", peft="adapter")


# --- the study planner -----------------------------------------------------------------------------
def _fast_configs():
    from studykit.profiles import study_configs
    return study_configs("task2", "fast", models=["tiny-bert"], seeds=[1]) + \
        study_configs("task3", "fast", models=["tiny-roberta"], seeds=[1])


def test_plan_study_rows_lengths_and_fits(tmp_path):
    configs = _fast_configs()
    plan = M.plan_study(configs, device="cpu")
    cells = {(c.model_name, c.dataset, "adapters" if c.adapter_size else "full") for c in configs}
    assert len(plan) == len(cells)
    assert (plan["lengths from"] == "training data, tokenized").all()
    assert (plan["seq_len"] <= [c.max_length for c in configs][0]).all()
    assert (plan["longest tokens"] >= plan["mean tokens"]).all()
    fit_cols = [c for c in plan.columns if c.startswith("max per-device batch")]
    assert len(fit_cols) == len(M.GPUS) and "80 GiB card = 85.9 GB" in fit_cols[-1]
    assert (plan[fit_cols[0]] == plan["per_device_batch"]).all()  # tiny models fit everywhere
    # the estimate at the plan's batch and length is estimate_memory's
    row = plan.iloc[0]
    assert row["est_peak_GB"] > row["activations_GB"] >= 0 and row["est_peak_GB"] > 0


def test_plan_falls_back_to_max_length_offline(tmp_path):
    import dataclasses
    configs = [dataclasses.replace(_fast_configs()[0], data_dir=str(tmp_path / "nowhere"))]
    plan = M.plan_study(configs, device="cpu")
    assert plan["lengths from"].iloc[0] == "max_length (the restaurant_sup data files are not here)"
    assert plan["seq_len"].iloc[0] == configs[0].max_length


def test_cells_that_do_not_fit_names_a_batch_that_does():
    configs = _fast_configs()
    assert M.cells_that_do_not_fit(configs, 80 * 2**30, device="cpu") == []
    one = M.estimate_memory("bert-base-uncased", precision="autocast", batch_size=1, seq_len=128)["total"]
    warnings = M.cells_that_do_not_fit(configs, 1e6, device="cpu")
    assert warnings and all("no per-device batch fits" in w or "per_device_batch_size=" in w for w in warnings)
    assert one > 1e6


def test_largest_batch_that_fits_is_linear_in_the_batch():
    fixed, a1, per = 1e9, 0.2e9, 0.1e9
    cap = M.CUDA_CONTEXT_BYTES + 1.1 * (fixed + a1 + 7 * per) + 1
    assert M.largest_batch_that_fits(cap, fixed, a1, per, batch_size=64) == 8
    assert M.largest_batch_that_fits(1e8, fixed, a1, per, batch_size=64) is None


# --- static output without a front end ------------------------------------------------------------
def test_no_front_end_outside_a_kernel_and_static_explorer():
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    assert M.has_widget_front_end() is False
    ex = M.memory_explorer("roberta-base", "adapter", 64, batch_size=4, seq_len=128)
    assert ex.live is False and ex.figure is not None
    import ipywidgets as W
    assert not any(isinstance(w, W.Output) for w in ex.box.children)  # nothing for nbclient to race on
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    InteractiveShell.instance()
    with capture_output() as out:
        from IPython.display import display
        display(ex)
    kinds = [set(o.data) for o in out.outputs]
    assert any("text/html" in k for k in kinds) and any("image/png" in k for k in kinds)
    assert "Static view" in out.outputs[0].data["text/html"]
    live = M.memory_explorer("roberta-base", live=True)
    assert any(isinstance(w, W.Output) for w in live.box.children)


def test_front_end_detected_from_the_kernel_environment(monkeypatch):
    from studykit.memory import widgets
    monkeypatch.setattr("IPython.get_ipython", lambda: type("ZMQInteractiveShell", (), {})())
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.delenv("VSCODE_PID", raising=False)
    monkeypatch.delenv("VSCODE_CWD", raising=False)
    assert widgets.has_widget_front_end() is False  # nbclient/papermill: a kernel, no front end
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/memory_estimate.ipynb")  # set by a Jupyter server
    assert widgets.has_widget_front_end() is True


def test_report_walk_starts_at_the_report_and_ends_at_our_estimate(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    walk = M.report_walk("llama-3.2-3b", "autocast", 4, 512)
    assert walk[0][1] == 30e9
    assert walk[-1][1] == M.estimate_memory("llama-3.2-3b", precision="autocast", batch_size=4, seq_len=512)["total"]
    peft = M.report_walk("llama-3.2-3b", "autocast", 4, 512, peft="lora", lora_rank=16)
    assert peft[0][1] == 12.12e9
    fig = M.plot_report_walk({"full": walk, "LoRA": peft}, save_to=tmp_path / "w.png")
    lines = [l.get_ydata()[0] for l in fig.axes[0].get_lines()]
    assert 80 * 2**30 / M.GB in lines  # the 80 GiB card is drawn, in GB


def test_plan_labels_each_run_by_its_own_method():
    # RunConfig always carries lora_rank (default 8): only method="lora" makes a run LoRA.
    from studykit.config import RunConfig
    from studykit.memory.plan import method_of
    assert method_of(RunConfig("tiny-bert", "restaurant_sup"))[0] == "full fine-tuning"
    assert method_of(RunConfig("tiny-bert", "restaurant_sup", adapter_size=16))[0] == "adapters m=16"
    label, kw = method_of(RunConfig("tiny-bert", "restaurant_sup", method="lora", lora_rank=4))
    assert label.startswith("LoRA r=4") and kw["peft"] == "lora" and kw["lora_rank"] == 4


def test_plan_keeps_its_columns_where_no_model_can_be_built(tmp_path):
    # The memory notebook selects these columns; a machine without the model package must not KeyError there.
    import dataclasses
    configs = [dataclasses.replace(_fast_configs()[0], model_name=str(tmp_path / "no-model"))]
    plan = M.plan_study(configs, device="cpu")
    assert {"lengths from", "est_peak_GB", "seq_len", "note"} <= set(plan.columns)
    assert plan["est_peak_GB"].isna().all() and plan["note"].iloc[0]
