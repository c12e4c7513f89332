"""RunConfig: hash stability across the redesign, hash rules from field metadata, validation messages."""
import dataclasses
import hashlib
import json

import pytest

from studykit.config import RunConfig, data_fingerprint


def _old_hash(config):
    """The hash as computed before the hash rules became field metadata (a hand-kept skip set)."""
    skip = {"seed", "results_dir", "data_dir", "num_threads", "save_adapter", "compile", "eval_batch_size"}
    new = {"method", "lora_rank", "lora_alpha", "early_stopping_patience",  # fields added since
           "dropout_kernel"}
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in skip | new}
    fields["data"] = data_fingerprint(config.dataset, config.data_dir)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


@pytest.mark.parametrize("settings", [{}, {"adapter_size": 16, "learning_rate": 1e-3},
                                      {"method": "adapter", "adapter_size": 64}, {"method": "full", "epochs": 3},
                                      {"precision": "bf16"}])
def test_existing_configurations_keep_their_hash(fixture_data, settings):
    # An explicit precision hashes as it always did ("auto" is hashed resolved now: tests/test_precision.py);
    # so does torch's dropout, the only kind before dropout_kernel.
    config = RunConfig("tiny-bert", "acl_sup", data_dir=fixture_data,
                       **{"precision": "fp32", "dropout_kernel": "torch", **settings})
    assert config.config_hash() == _old_hash(config)


def test_the_dropout_kernel_enters_the_hash_resolved_and_only_when_not_torch(fixture_data, monkeypatch):
    def config(kernel):
        return RunConfig("tiny-bert", "acl_sup", data_dir=fixture_data, precision="bf16", dropout_kernel=kernel)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert config("auto").resolved_dropout_kernel == "int16"  # bf16 on CPU
    assert config("auto").config_hash() == config("int16").config_hash() != config("torch").config_hash()
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a GPU: auto is torch's, the old hash
    assert config("auto").resolved_dropout_kernel == "torch"
    assert config("auto").config_hash() == config("torch").config_hash() == _old_hash(config("torch"))


def test_new_fields_enter_the_hash_only_when_they_change_the_run(fixture_data):
    base = RunConfig("tiny-roberta", "restaurant_sup", data_dir=fixture_data)
    lora = RunConfig("tiny-roberta", "restaurant_sup", data_dir=fixture_data, method="lora")
    lora16 = RunConfig("tiny-roberta", "restaurant_sup", data_dir=fixture_data, method="lora", lora_rank=16)
    assert len({base.config_hash(), lora.config_hash(), lora16.config_hash()}) == 3
    assert lora.method_name == "lora" and base.method_name == "full"
    spelled = RunConfig("tiny-roberta", "restaurant_sup", data_dir=fixture_data, method="full")
    assert spelled.config_hash() == base.config_hash() and spelled.method is None


def test_every_field_has_help_and_a_hash_rule():
    for f in dataclasses.fields(RunConfig):
        assert f.metadata.get("help"), f.name
        assert f.metadata.get("hash") in ("always", "never", "unless_default", "resolved"), f.name
        if f.metadata["hash"] == "resolved":  # hashed as resolved_<name> says, left out at its legacy value
            assert hasattr(RunConfig, f"resolved_{f.name}"), f.name  # (legacy None: always in, as precision)


@pytest.mark.parametrize("settings, message", [
    ({"seed": True}, "seed must be an int, got True"),
    ({"seed": "1"}, "seed must be an int, got '1'"),
    ({"max_length": 4}, "max_length must be an int >= 8"),
    ({"task": "../elsewhere"}, "task must be a plain name"),
    ({"task": "task 2"}, "task must be a plain name"),
    ({"method": "prefix"}, "method must be None or one of"),
    ({"method": "full", "adapter_size": 8}, "adapter_size is set but method is 'full'"),
    ({"method": "adapter"}, "method='adapter' needs adapter_size"),
    ({"per_device_batch_size": 0}, "per_device_batch_size must be None or an int >= 1"),
    ({"lora_rank": 0, "method": "lora"}, "lora_rank and lora_alpha must be ints >= 1"),
    ({"dropout_kernel": "fast"}, "dropout_kernel must be one of ('auto', 'torch', 'int16'), got 'fast'"),
])
def test_bad_settings_are_refused_with_a_message_naming_the_field(settings, message):
    with pytest.raises(ValueError, match="bad RunConfig for tiny-bert / acl_sup: " + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace(".", r"\.")):
        RunConfig("tiny-bert", "acl_sup", **settings)


def test_max_length_beyond_the_model_is_refused_when_the_model_is_known(tmp_path, fixture_data):
    from studykit.training import train_run
    config = RunConfig("tiny-bert", "restaurant_sup", max_length=512, data_dir=fixture_data,
                       results_dir=str(tmp_path), num_threads=1)
    with pytest.raises(ValueError, match=r"max_length 512 is more than model 'tiny-bert' accepts \(128 tokens\)"):
        train_run(config)
