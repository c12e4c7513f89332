"""Training methods as objects: full fine-tuning, our Houlsby adapters, and LoRA (peft).

Each method is one small frozen config with the same three parts, kept apart as in peft:
`apply(model)` injects its modules and sets which parameters train (its one trainable-parameter policy),
`added_parameters(num_layers, hidden_size)` is its one parameter-count formula (training, results and the
memory estimator all use it), and `save(model, path)` writes what the run learned (or nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, inject_adapter_in_model
import torch
from safetensors.torch import save_file
from torch import nn

from .adapters import DEFAULT_ADAPTER_SIZE, HEAD_NAMES, add_adapters, adapter_parameter_count, save_adapters

__all__ = ["FullFineTuning", "HoulsbyAdapters", "LoRA", "LORA_TARGET_NAMES", "method_for", "method_named", "lora_parameter_count"]


def _head_modules(model):
    return [getattr(model, n) for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]


@dataclass(frozen=True)
class FullFineTuning:
    """Every weight trains; nothing is added."""
    name = "full"
    weights_file = None

    def apply(self, model):
        model.requires_grad_(True)
        return model

    def added_parameters(self, num_layers: int, hidden_size: int) -> int:
        return 0

    def save(self, model, path) -> None:
        raise ValueError("full fine-tuning saves no method weights")


@dataclass(frozen=True)
class HoulsbyAdapters:
    """Two bottleneck adapters per layer; adapters, LayerNorms (optionally) and the head train."""
    adapter_size: int = DEFAULT_ADAPTER_SIZE
    train_layer_norm: bool = True
    name = "adapter"
    weights_file = "adapter.safetensors"

    def apply(self, model):
        return add_adapters(model, adapter_size=self.adapter_size, train_layer_norm=self.train_layer_norm)

    def added_parameters(self, num_layers: int, hidden_size: int) -> int:
        return adapter_parameter_count(num_layers, hidden_size, self.adapter_size)

    def save(self, model, path) -> None:
        save_adapters(model, path)


def lora_parameter_count(num_layers: int, hidden_size: int, rank: int, targets: int = 2) -> int:
    """Parameters LoRA adds: per adapted d x d projection, A (r x d) and B (d x r), no biases."""
    return num_layers * targets * rank * 2 * hidden_size


# The attention projections LoRA adapts, by role, under each family's module names: BERT/RoBERTa (and the
# original LoRA recipe) call them `query` and `value`, MPNet and T5 `q` and `v`, DistilBERT `q_lin` and `v_lin`,
# Llama-style decoders (Llama, Qwen2, Mistral; peft's defaults for them) `q_proj` and `v_proj`. A role not
# listed is matched as a module name itself (GPT-2's fused `c_attn`, ModernBERT's `Wqkv`).
LORA_TARGET_NAMES = {"query": ("query", "q", "q_lin", "q_proj"), "value": ("value", "v", "v_lin", "v_proj")}


@dataclass(frozen=True)
class LoRA:
    """Low-rank updates of the attention query and value projections (peft); LoRA weights and head train."""
    rank: int = 8
    alpha: int = 16
    target_modules: tuple = ("query", "value")  # roles, named as in BERT; LORA_TARGET_NAMES has other names
    # False: LoRA weights in the base model's dtype (our trainer's models are fp32); True: in fp32 whatever the
    # base dtype, as peft's get_peft_model does by default (autocast_adapter_dtype) over a bf16 base model.
    fp32_weights: bool = False
    name = "lora"
    weights_file = "lora.safetensors"

    @property
    def target_names(self) -> tuple:
        """Every name the target projections go by in the families we know (query, q, value, v): what to match
        when no model is at hand (the memory planner); peft and our counts skip names a model lacks."""
        return tuple(n for role in self.target_modules for n in LORA_TARGET_NAMES.get(role, (role,)))

    def module_names(self, model) -> list[str]:
        """The names `model` gives the target projections, one per role (["query", "value"] in BERT,
        ["q", "v"] in MPNet), as peft's `target_modules` matches them (the end of a module's name)."""
        leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        names = []
        for role in self.target_modules:
            candidates = LORA_TARGET_NAMES.get(role, (role,))
            found = [n for n in candidates if n in leaves]
            if len(found) != 1:
                model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
                problem = "no module" if not found else f"modules of more than one naming ({found})"
                raise ValueError(
                    f"LoRA target '{role}': {problem} named {' or '.join(map(repr, candidates))} in model type "
                    f"'{model_type}'. Add this architecture's name for the {role} projection to "
                    "studykit.methods.LORA_TARGET_NAMES.")
            names += found
        return names

    def apply(self, model):
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self.module_names(model))
        model = inject_adapter_in_model(config, model)  # in place; freezes everything but the LoRA weights
        if self.fp32_weights:
            for name, module in model.named_modules():
                if isinstance(module, nn.Linear) and (".lora_A." in name or ".lora_B." in name):
                    module.to(torch.float32)
        for head in _head_modules(model):
            head.requires_grad_(True)  # a new task head must train (peft's modules_to_save does the same)
        return model

    def added_parameters(self, num_layers: int, hidden_size: int) -> int:
        return lora_parameter_count(num_layers, hidden_size, self.rank, len(self.target_modules))

    def save(self, model, path) -> None:
        state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(state, str(path), metadata={"rank": str(self.rank), "alpha": str(self.alpha),
                                              "target_modules": ",".join(self.module_names(model))})


def method_named(name: str, adapter_size: int = DEFAULT_ADAPTER_SIZE, adapter_train_layer_norm: bool = True,
                 lora_rank: int = 8, lora_alpha: int = 16):
    """The method object called `name` (full, adapter, lora) with these settings (RunConfig's names)."""
    if name == "adapter":
        return HoulsbyAdapters(adapter_size, adapter_train_layer_norm)
    if name == "lora":
        return LoRA(lora_rank, lora_alpha)
    if name == "full":
        return FullFineTuning()
    raise ValueError(f"unknown training method {name!r}: full, adapter or lora")


def method_for(config):
    """The method object a `RunConfig` describes."""
    return method_named(config.method_name, config.adapter_size, config.adapter_train_layer_norm, config.lora_rank,
                        config.lora_alpha)
