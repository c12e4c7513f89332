"""Precision that fits the device: "auto" resolved per machine, hashed resolved, recorded with its reason and
named alike on the console; profiles with committed runs pinned; runs of different precisions in one process.
Every CPU-dependent branch runs both ways here (`cpu_bf16` pretends the CPU has native bf16 or not)."""

import pytest
import torch

import utils
from studykit import hardware
from studykit.config import RunConfig


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend this CPU has native bf16 (True) or not (False)."""
    def pretend(has: bool):
        monkeypatch.setattr(hardware, "_cpu_bf16_features", lambda: ("AVX-512 BF16",) if has else ())
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.delenv(hardware.CPU_BF16_ENV, raising=False)  # a real CPU of that kind, not a forced one
    return pretend


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_picks_bf16_only_on_a_cpu_with_native_bf16(cpu_bf16, has_bf16, expected):
    cpu_bf16(has_bf16)
    precision, reason = hardware.resolve_precision("auto")
    assert precision == expected and reason.startswith("auto: CPU")
    assert ("supports AVX-512 BF16" in reason) == has_bf16
    assert hardware.resolve_precision("fp32") == ("fp32", "set explicitly")  # forcing fp32 always works
    assert hardware.cpu_supports_bf16() == has_bf16


def test_auto_hashes_as_the_precision_it_resolves_to(cpu_bf16, fixture_data):
    def config(precision):
        return RunConfig("tiny-bert", "restaurant_sup", data_dir=fixture_data, precision=precision)
    cpu_bf16(True)
    auto_bf16 = config("auto").config_hash()
    assert auto_bf16 == config("bf16").config_hash() and config("auto").resolved_precision == "bf16"
    cpu_bf16(False)
    auto_fp32 = config("auto").config_hash()
    assert auto_fp32 == config("fp32").config_hash() != auto_bf16  # an fp32 and a bf16 run never share a folder


@pytest.mark.parametrize("has_bf16", [True, False])
def test_reference_profiles_pin_the_precision_their_committed_runs_used(cpu_bf16, has_bf16):
    # The renderer's CPU must not change which folders a committed report reads: every profile with committed
    # runs names its precision; only the fast profile (nothing committed) and the full one keep "auto".
    cpu_bf16(has_bf16)
    for task in ("task2", "task3"):
        for profile in ("reference", "parity"):
            configs = utils.study_configs(task, profile)
            assert {c.precision for c in configs} == {"bf16"}
            assert {c.resolved_precision for c in configs} == {"bf16"}


@pytest.mark.parametrize("has_bf16", [True, False])
def test_the_console_and_the_summary_name_the_precision_alike(cpu_bf16, has_bf16, tmp_path, fixture_data, capsys):
    cpu_bf16(has_bf16)
    summary = utils.train_run(RunConfig("tiny-bert", "restaurant_sup", batch_size=16, epochs=1, max_steps=1,
                                        evals_per_epoch=1, data_dir=fixture_data, results_dir=str(tmp_path)))
    expected = "bf16" if has_bf16 else "fp32"
    assert summary["precision"] == expected and summary["precision_reason"].startswith("auto: CPU")
    assert f"precision {expected} (auto: CPU" in capsys.readouterr().out


def test_runs_of_different_precisions_in_one_process(tmp_path, fixture_data):
    # Accelerate's state is one per process: without a reset the second run raised "AcceleratorState has
    # already been initialized and cannot be changed".
    base = dict(model_name="tiny-bert", dataset="restaurant_sup", batch_size=16, learning_rate=3e-3, epochs=1,
                max_steps=2, evals_per_epoch=1, data_dir=fixture_data, results_dir=str(tmp_path), num_threads=1)
    configs = [RunConfig(**base, precision=p) for p in ("fp32", "bf16", "fp32")]
    configs[2].seed = 2
    grid = utils.run_grid(configs, stop_on_error=True)
    assert list(grid["status"]) == ["finished"] * 3
    assert list(grid["precision"]) == ["fp32", "bf16", "fp32"]
    assert list(grid["precision_reason"]) == ["set explicitly"] * 3
    single = utils.train_run(RunConfig(**base, seed=3, precision="auto"))
    assert (single["precision"], single["precision_reason"]) == hardware.resolve_precision("auto")


@pytest.mark.parametrize("forced, expected", [("0", "fp32"), ("1", "bf16")])
def test_the_cpu_kind_can_be_forced_for_a_whole_run_of_the_suite(monkeypatch, forced, expected):
    # STUDYKIT_CPU_BF16 reaches subprocesses too (train.py, notebooks, accelerate launch): the whole suite runs
    # as on the other kind of CPU with `STUDYKIT_CPU_BF16=0 python -m pytest -q`.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(hardware.CPU_BF16_ENV, forced)
    assert hardware.resolve_precision("auto")[0] == expected
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "no")
    with pytest.raises(ValueError, match="STUDYKIT_CPU_BF16='no': use 1"):
        hardware.resolve_precision("auto")


@pytest.mark.parametrize("has_bf16, kind", [(True, "native bf16 (AVX-512 BF16)"), (False, "no native bf16")])
def test_the_setup_line_says_which_kind_of_cpu_rendered_it(cpu_bf16, has_bf16, kind):
    cpu_bf16(has_bf16)
    assert hardware.describe_machine().endswith(kind)
    assert f"hardware: {hardware.describe_machine()}" in utils.describe_setup("fast", utils.study_configs("task2", "fast"))


def test_a_forced_cpu_kind_says_so_where_figures_are_labelled(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "0")
    assert hardware.describe_machine().endswith("no native bf16 (forced by $STUDYKIT_CPU_BF16=0)")
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "1")
    assert hardware.describe_machine().endswith(", native bf16 (forced by $STUDYKIT_CPU_BF16=1)")


@pytest.mark.parametrize("precision, matmul_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_forward_pass_runs_in_the_precision_the_run_records(precision, matmul_dtype, tmp_path, fixture_data,
                                                                monkeypatch):
    """What the engine computes in, seen from inside the model: every Linear's output dtype in the training
    forward passes, and the weights' dtype (bf16 is autocast: weights and optimizer stay fp32)."""
    from studykit import training
    seen = {"outputs": set(), "weights": set()}

    class Watched:
        name, weights_file = "full", None

        def apply(self, model):
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.register_forward_hook(lambda m, args, out: seen["outputs"].add(out.dtype)
                                                 if m.training else None)
                    seen["weights"].add(module.weight.dtype)
            return model.requires_grad_(True)
    monkeypatch.setattr(training, "method_for", lambda config: Watched())
    summary = utils.train_run(RunConfig("tiny-bert", "restaurant_sup", batch_size=16, epochs=1, max_steps=2,
                                        evals_per_epoch=1, data_dir=fixture_data, results_dir=str(tmp_path),
                                        precision=precision))
    assert summary["precision"] == precision and summary["training_method"] == "full"
    assert seen["outputs"] == {matmul_dtype}
    assert seen["weights"] == {torch.float32}
