import json

import pytest

import utils
from studykit import evaluation, pipeline, training


def _config(tmp_path, fixture_data, **kw):
    base = dict(model_name="tiny-bert", dataset="restaurant_sup", epochs=2, batch_size=16, learning_rate=3e-3,
                data_dir=fixture_data, results_dir=str(tmp_path / "results"), num_threads=1)
    return utils.RunConfig(**{**base, **kw})


def test_train_run_writes_config_metrics_and_summary(tmp_path, fixture_data):
    config = _config(tmp_path, fixture_data)
    summary = utils.train_run(config)
    for key in ("accuracy", "f1_macro", "f1_micro", "eval_loss", "train_samples_per_s", "peak_memory_bytes",
                "hardware", "versions", "time_per_epoch_s"):
        assert key in summary
    assert summary["eval_examples"] == 48 and summary["steps"] == 12  # 96 / 16 = 6 steps x 2 epochs
    run = config.run_dir
    assert run.relative_to(tmp_path / "results" / "task2" / "restaurant_sup" / "tiny-bert")
    assert json.loads((run / "config.json").read_text())["learning_rate"] == 3e-3
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["split"] == "test"]
    assert len([r for r in evals if r["epoch"] <= 1]) >= 4, "several evaluations per epoch"
    assert {"accuracy", "f1_macro", "f1_micro", "eval_loss"} <= set(evals[-1])
    assert all(r["loss"] > 0 for r in log if r["split"] == "train")
    assert evals[-1]["f1_macro"] == summary["f1_macro"]


def test_finished_run_is_loaded_not_retrained(tmp_path, fixture_data, monkeypatch):
    config = _config(tmp_path, fixture_data, epochs=1)
    first = utils.train_run(config)
    monkeypatch.setattr(training, "_train", lambda *a: pytest.fail("a finished run was trained again"))
    assert utils.train_run(config) == first


def test_tokenization_is_cached_per_tokenizer_and_dataset(tmp_path, fixture_data, monkeypatch):
    utils.train_run(_config(tmp_path, fixture_data, epochs=1, seed=1))
    cached = list((tmp_path / "results" / ".cache" / "tokenized").iterdir())
    assert len(cached) == 1
    # A second seed of the same (tokenizer, dataset) must not read or tokenize the raw data again.
    monkeypatch.setattr(training, "get_dataset", lambda *a: pytest.fail("re-tokenized"))
    utils.train_run(_config(tmp_path, fixture_data, epochs=1, seed=2))


def test_gradient_accumulation_matches_the_full_batch(tmp_path, fixture_data):
    common = dict(epochs=1, dropout=0.0, group_by_length=False)  # same sample order for both
    whole = utils.train_run(_config(tmp_path / "a", fixture_data, **common))
    accumulated = utils.train_run(_config(tmp_path / "b", fixture_data, per_device_batch_size=8, **common))
    assert accumulated["gradient_accumulation"] == 2 and whole["gradient_accumulation"] == 1
    assert accumulated["steps"] == whole["steps"]
    assert accumulated["eval_loss"] == pytest.approx(whole["eval_loss"], abs=1e-4)
    assert accumulated["train_loss"] == pytest.approx(whole["train_loss"], abs=1e-4)


def test_adapter_run_trains_few_parameters_and_saves_only_them(tmp_path, fixture_data):
    full = utils.train_run(_config(tmp_path, fixture_data, model_name="tiny-roberta", epochs=1))
    config = _config(tmp_path, fixture_data, model_name="tiny-roberta", epochs=1, adapter_size=8,
                     learning_rate=1e-2, task="task3")
    adapter = utils.train_run(config)
    assert adapter["trainable_params"] < 0.2 * adapter["total_params"]
    assert full["trainable_params"] == full["total_params"]
    saved = config.run_dir / "adapter.safetensors"
    assert saved.is_file() and adapter["checkpoint_bytes"] == saved.stat().st_size
    assert adapter["checkpoint_bytes"] < full["checkpoint_bytes"] / 3


def test_weight_decay_skips_biases_and_layer_norms(tmp_path, fixture_data):
    model, _ = utils.load_model_and_tokenizer("tiny-bert", 3, tmp_path)
    optimizer = training._optimizer(model, _config(tmp_path, fixture_data, weight_decay=0.1), fused=False)
    decayed, plain = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decayed["params"])
    assert any("LayerNorm" in names[id(p)] for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_predictions_are_saved_in_test_split_order(tmp_path, fixture_data):
    config = _config(tmp_path, fixture_data, epochs=8)
    summary = utils.train_run(config)
    predictions = json.loads((config.run_dir / "predictions.json").read_text())
    labels = utils.get_dataset("restaurant_sup", "[SEP]", fixture_data)["test"]["label"]
    assert len(predictions) == 48 and len(set(predictions)) > 1  # a constant guess would hide the order
    accuracy = sum(p == y for p, y in zip(predictions, labels)) / len(labels)
    assert accuracy == pytest.approx(summary["accuracy"])  # wrong order would not reproduce it
    results = utils.load_results(config.results_dir)
    table = utils.overlap_effect(results, "restaurant_sup", fixture_data)
    assert table["accuracy_all"].iloc[0] == pytest.approx(summary["accuracy"])


def test_evaluation_batch_changes_speed_not_results(tmp_path, fixture_data):
    # eval_batch_size is left out of the config hash, so it must not change what a run reports.
    default = _config(tmp_path / "a", fixture_data, epochs=1)
    small = _config(tmp_path / "b", fixture_data, epochs=1, eval_batch_size=5)
    assert default.config_hash() == small.config_hash()
    first, second = utils.train_run(default), utils.train_run(small)
    assert (first["eval_batch_size"], second["eval_batch_size"]) == (32, 5)  # 32: the CPU default
    for key in ("accuracy", "f1_macro", "eval_loss"):
        assert first[key] == pytest.approx(second[key], abs=1e-6)
    assert (json.loads((default.run_dir / "predictions.json").read_text())
            == json.loads((small.run_dir / "predictions.json").read_text()))
    assert pipeline.eval_batch_size_for(default, "cuda") == 256
    with pytest.raises(ValueError, match="eval_batch_size"):
        _config(tmp_path, fixture_data, eval_batch_size=0)


def test_macro_f1_averages_over_every_class_of_the_dataset():
    """A test set (or subset) where a class never occurs still averages over all classes, like the full split."""
    import torch
    from types import SimpleNamespace
    from accelerate import Accelerator

    class Fixed(torch.nn.Module):  # predicts the true label: perfect on the classes present
        def forward(self, input_ids, attention_mask):
            return SimpleNamespace(logits=torch.nn.functional.one_hot(input_ids[:, 0], 3).float())
    labels = torch.tensor([0, 1, 0, 1])
    batch = {"input_ids": labels[:, None], "attention_mask": torch.ones(4, 1), "labels": labels,
             "idx": torch.arange(4)}
    metrics = evaluation.evaluate(Fixed(), [batch], Accelerator(cpu=True), num_labels=3)
    assert metrics["accuracy"] == 1.0 and metrics["f1_macro"] == pytest.approx(2 / 3)
    assert metrics["predictions"] == [0, 1, 0, 1]


def test_package_guards_posix_only_imports():
    """`resource` does not exist on Windows: every import of it in the package sits in a try/except ImportError."""
    import ast
    from pathlib import Path

    for path in (Path(training.__file__).parent).glob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                   and any("ImportError" in ast.unparse(h.type or ast.Name("")) for h in t.handlers)
                   for n in ast.walk(t)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "resource" for a in node.names):
                assert id(node) in guarded, f"{path.name}:{node.lineno} imports resource unguarded"
    assert training.resource is not None  # here (Linux) the guard finds it: peak RSS is still measured
