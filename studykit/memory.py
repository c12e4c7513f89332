"""GPU memory of fine-tuning, full vs PEFT: an estimator you can read, and a measurement to check it.

`estimate_memory(model, **assumptions)` adds up bytes per component:

- weights          every parameter in the working precision (frozen ones included);
- gradients        one per *trainable* parameter;
- optimizer_state  AdamW's two moments, SGD's momentum, 8-bit Adam, or Adafactor's factored moment;
- master_weights   the fp32 copy of the trainable parameters that mixed precision keeps;
- activations      tensors autograd keeps for backward, counted term by term from the real layer
                   shape (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
                   Transformer Models", arXiv:2205.05198, Sec. 4.1: s·b·h·(34 + 5·a·s/h) bytes per
                   GPT layer), adapted to GQA, gated MLPs, RMSNorm and frozen weights;
- overhead         CUDA context and allocator slack (a stated assumption, 0 on CPU).

`model` is a parameter count, a transformers config, or a name from `MODEL_CONFIGS`. Parameter
counts are exact: the model is built on the meta device (no weights, no download).

`measure_memory(...)` runs a real training step and reports the same components, measured.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .hardware import cpu_name

__all__ = [
    "COMPONENTS", "MODEL_CONFIGS", "VALIDATION_CONFIGS", "PRECISIONS", "OPTIMIZERS", "PRESETS",
    "DEFAULT_ASSUMPTIONS", "GPUS", "CUDA_CONTEXT_BYTES", "ALLOCATOR_FRACTION", "GB",
    "ACTIVATION_TOLERANCE", "TOTAL_TOLERANCE",
    "get_config", "architecture", "count_model_parameters", "bytes_per_parameter", "activation_terms",
    "korthikanti_layer_bytes",
    "estimate_memory", "measure_memory", "validation_cases", "validate_estimates", "gpus_that_fit",
    "format_bytes", "breakdown_table", "plot_memory_breakdown", "memory_summary", "memory_explorer",
    "describe_machine",
]

GB = 1e9  # the report counts in decimal gigabytes (3e9 parameters x 2 bytes = 6 GB); so do we
COMPONENTS = ("weights", "gradients", "optimizer_state", "master_weights", "activations", "overhead")

# ---------------------------------------------------------------------------------------------------
# Shipped configurations: the values of each model's config.json on the Hugging Face Hub, typed in
# here so that nothing is downloaded. Only fields that matter for shapes (and a few for fidelity).
# ---------------------------------------------------------------------------------------------------
MODEL_CONFIGS = {
    # meta-llama/Llama-3.2-3B, config.json; model card: 3.21B parameters (embeddings tied).
    "llama-3.2-3b": dict(
        model_type="llama", vocab_size=128256, hidden_size=3072, intermediate_size=8192,
        num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
        hidden_act="silu", max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=dict(factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                          original_max_position_embeddings=8192, rope_type="llama3"),
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, tie_word_embeddings=True,
        bos_token_id=128000, eos_token_id=128001),
    # Qwen/Qwen2.5-3B, config.json; model card: 3.09B parameters, 2.77B non-embedding (tied).
    "qwen2.5-3b": dict(
        model_type="qwen2", vocab_size=151936, hidden_size=2048, intermediate_size=11008,
        num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, hidden_act="silu",
        max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False,
        sliding_window=32768, max_window_layers=36, attention_dropout=0.0, tie_word_embeddings=True,
        bos_token_id=151643, eos_token_id=151643),
    # openlm-research/open_llama_3b, config.json (a LLaMA-1 layout: no GQA, untied output layer).
    "open-llama-3b": dict(
        model_type="llama", vocab_size=32000, hidden_size=3200, intermediate_size=8640,
        num_hidden_layers=26, num_attention_heads=32, num_key_value_heads=32, hidden_act="silu",
        max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0),
    # stabilityai/stablelm-3b-4e1t, config.json; model card: 2,795,443,200 parameters.
    "stablelm-3b-4e1t": dict(
        model_type="stablelm", vocab_size=50304, hidden_size=2560, intermediate_size=6912,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, hidden_act="silu",
        max_position_embeddings=4096, layer_norm_eps=1e-5, rope_theta=10000, partial_rotary_factor=0.25,
        use_qkv_bias=False, hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=0),
    # FacebookAI/roberta-base, config.json: the encoder of Tasks 2 and 3 (classification head, 2 labels).
    "roberta-base": dict(
        model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12,
        num_attention_heads=12, intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, max_position_embeddings=514, type_vocab_size=1,
        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2),
}

# Small shapes that train in seconds on a CPU, used to check the estimator against measurement.
VALIDATION_CONFIGS = {
    "roberta-base": MODEL_CONFIGS["roberta-base"],
    # roberta-base's layer layout at a quarter of the width and a third of the depth.
    "roberta-mini": dict(MODEL_CONFIGS["roberta-base"], hidden_size=256, num_hidden_layers=4,
                         num_attention_heads=4, intermediate_size=1024, vocab_size=8192),
    # a Llama layer with grouped-query attention (8 query heads, 2 KV heads) and a gated MLP.
    "llama-mini": dict(model_type="llama", vocab_size=4096, hidden_size=256, intermediate_size=688,
                       num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                       hidden_act="silu", max_position_embeddings=2048, tie_word_embeddings=False),
}

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")  # built with a classification head
# peft's default LoRA targets (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING): query and value.
LORA_DEFAULT_TARGETS = {"bert": ("query", "value"), "roberta": ("query", "value"),
                        "xlm-roberta": ("query", "value"), "camembert": ("query", "value")}
LORA_DEFAULT_TARGETS_DECODER = ("q_proj", "v_proj")
# The role each Linear plays in a layer, by the end of its module name (BERT-style, then Llama-style).
LINEAR_ROLES = (("attention.self.query", "q"), ("attention.self.key", "k"), ("attention.self.value", "v"),
                ("attention.output.dense", "o"), ("intermediate.dense", "up"), ("output.dense", "down"),
                ("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o"),
                ("gate_proj", "up"), ("up_proj", "up"), ("down_proj", "down"))
ALL_ROLES = frozenset({"q", "k", "v", "o", "up", "down"})

# ---------------------------------------------------------------------------------------------------
# Precision schemes (bytes per parameter) and optimizers.
# ---------------------------------------------------------------------------------------------------
PRECISIONS = {
    "fp32": dict(weights=4, gradients=4, master_weights=0, state=4, activations=4,
                 label="fp32 everywhere (4 + 4 + 8 = 16 B/param with AdamW, no master copy)"),
    # ZeRO paper (Rajbhandari et al. 2020, Sec. 3.1): fp16 parameters 2 B + fp16 gradients 2 B +
    # K = 12 B of fp32 optimizer state (master weights 4, momentum 4, variance 4) = 16 B/param.
    "mixed": dict(weights=2, gradients=2, master_weights=4, state=4, activations=2,
                  label="mixed precision, 16-bit grads + fp32 master (ZeRO: 2+2+4+8 = 16 B/param)"),
    # Gradients kept in fp32 (Megatron's main_grad, "bf16 param, fp32 grads: 18 bytes"; Hugging Face's
    # "Model memory anatomy": fp32 model + 16-bit copy 6 B, fp32 grads 4 B, AdamW 8 B = 18 B/param).
    "mixed_fp32_grads": dict(weights=2, gradients=4, master_weights=4, state=4, activations=2,
                             label="mixed precision, fp32 grads + fp32 master (HF/Megatron: 18 B/param)"),
    # Everything 16-bit, optimizer moments too: the report's accounting (2 + 2 + 4 = 8 B/param).
    "bf16": dict(weights=2, gradients=2, master_weights=0, state=2, activations=2,
                 label="pure bf16: weights, grads and optimizer state 16-bit (2+2+4 = 8 B/param)"),
}
OPTIMIZERS = {
    "adamw": "AdamW: two moments per trainable parameter",
    "sgd_momentum": "SGD with momentum: one buffer per trainable parameter",
    # bitsandbytes 8-bit blockwise Adam (Dettmers et al. 2022): 1 byte per moment plus one fp32 scale
    # per block of 256 values; tensors under 4096 values keep 32-bit states (min_8bit_size).
    "adam_8bit": "8-bit Adam (bitsandbytes): two 8-bit moments + block scales",
    # Adafactor (Shazeer & Stern 2018), transformers' defaults (beta1=None: no first moment): a row and a
    # column second-moment vector per matrix, a full one per vector.
    "adafactor": "Adafactor: factored second moment (rows + columns), no first moment",
}
ADAM8_BLOCK, ADAM8_MIN_SIZE = 256, 4096
# When only a parameter count is known, Adafactor's factored state is approximated for square
# matrices of side 4096: (4096 + 4096) values per 4096² parameters.
ADAFACTOR_COUNT_ONLY_RATIO = 2 / 4096

# Overhead on a GPU (a stated assumption, not measured here): the CUDA context with cuBLAS/cuDNN
# workspaces (about 0.3-1 GB depending on driver and kernels; not in torch.cuda.max_memory_allocated)
# plus the caching allocator's fragmentation and short-lived tensors at the peak (the gradient of
# the logits, autocast copies), taken as a fraction of everything else.
CUDA_CONTEXT_BYTES = int(0.5e9)
ALLOCATOR_FRACTION = 0.10

DEFAULT_ASSUMPTIONS = dict(
    precision="mixed", optimizer="adamw", batch_size=4, seq_len=512, checkpointing=False,
    memory_efficient_attention=True, peft=None, peft_fraction=None, lora_rank=16, lora_targets=None,
    bottleneck_size=64, zero_stage=0, num_gpus=1, device="cuda", overhead=True, activations=None)
PRESETS = {
    # The report: fp16 weights 2 B + fp16 grads 2 B + Adam 4 B per parameter, activations guessed as
    # large as the weights, nothing for overhead; PEFT adds its trainable parameters to the frozen model.
    "report": dict(precision="bf16", optimizer="adamw", activations="weights", overhead=False),
    "standard": {},
}

# GPU sizes for the "which GPUs fit" line. Cards are sold in GiB; we compare against GiB.
GPUS = {"8 GB laptop": 8 * 2**30, "24 GB (RTX 3090/4090)": 24 * 2**30,
        "40 GB (A100 40GB)": 40 * 2**30, "80 GB (A100/H100 80GB)": 80 * 2**30}


# ---------------------------------------------------------------------------------------------------
# Models: configs, meta-device builds, architecture, exact parameter counts.
# ---------------------------------------------------------------------------------------------------
def get_config(model):
    """A transformers config from a shipped name (`MODEL_CONFIGS`, `VALIDATION_CONFIGS`) or a config."""
    from transformers import AutoConfig, PretrainedConfig
    if isinstance(model, PretrainedConfig):
        return model
    if isinstance(model, str):
        known = {**VALIDATION_CONFIGS, **MODEL_CONFIGS}
        if model.lower() not in known:
            raise ValueError(f"unknown model name {model!r}; shipped: {', '.join(known)}; "
                             "or pass a transformers config or a parameter count")
        fields = dict(known[model.lower()])
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    raise TypeError(f"model must be a parameter count, a shipped name or a transformers config, got {type(model)}")


def _is_encoder(config):
    return config.model_type in ENCODER_TYPES


def _model_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    return AutoModelForSequenceClassification if _is_encoder(config) else AutoModelForCausalLM


def _role(name):
    for suffix, role in LINEAR_ROLES:
        if name.endswith(suffix):
            return role
    return None


@dataclass(frozen=True)
class Architecture:
    """What the activation count needs to know about a model's layers."""
    model_type: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated: bool            # SwiGLU-style MLP (gate and up projections)
    norm: str              # "layernorm" or "rmsnorm"
    causal: bool           # causal LM (vocab logits) vs encoder with a classification head
    hidden_dropout: float
    attention_dropout: float


def _first(config, names, default=0.0):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


@functools.lru_cache(maxsize=64)
def _meta_stats(config_json, peft, lora_rank, lora_targets, bottleneck_size):
    """Build the model on the meta device, optionally with PEFT, and count what we need (cached)."""
    from transformers import AutoConfig
    fields = json.loads(config_json)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        model = _model_class(config).from_config(config)
    base_total = sum(p.numel() for p in model.parameters())
    norm = "rmsnorm" if any("RMSNorm" in type(m).__name__ for m in model.modules()) else "layernorm"
    gated = any(n.endswith(("gate_proj", "gate_up_proj")) for n, _ in model.named_modules())
    heads = config.num_attention_heads
    arch = Architecture(
        model_type=config.model_type, layers=config.num_hidden_layers, hidden=config.hidden_size,
        heads=heads, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        intermediate=config.intermediate_size, vocab=config.vocab_size, gated=gated, norm=norm,
        causal=not _is_encoder(config),
        hidden_dropout=float(_first(config, ("hidden_dropout_prob", "hidden_dropout", "resid_pdrop"))),
        attention_dropout=float(_first(config, ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"))))
    head_names = ("classifier", "score")
    note, roles, norms_trainable, adapter, added, lora_modules = "", ALL_ROLES, True, 0, 0, 0
    if peft is None:
        trainable = [tuple(p.shape) for p in model.parameters()]
    elif peft == "lora":
        targets = lora_targets or LORA_DEFAULT_TARGETS.get(config.model_type, LORA_DEFAULT_TARGETS_DECODER)
        trainable, roles, lora_modules = [], set(), 0
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear) or name.split(".")[0] in head_names + ("lm_head",):
                continue
            if targets == ("all-linear",) or any(name == t or name.endswith("." + t) for t in targets):
                # LoRA: A is r x in, B is out x r, so r·(in + out) parameters per targeted Linear.
                trainable += [(lora_rank, module.in_features), (module.out_features, lora_rank)]
                roles.add(_role(name))
                lora_modules += 1
        added = sum(math.prod(s) for s in trainable)
        if not trainable:
            raise ValueError(f"no Linear module matches lora_targets={targets} in {config.model_type}")
        roles, norms_trainable = frozenset(roles - {None}), False
        note = f"LoRA r={lora_rank} on {', '.join(targets)}"
        for name in head_names:  # the classification head stays trainable (peft's modules_to_save),
            if isinstance(getattr(model, name, None), nn.Module):  # a trained copy beside the frozen original
                head = [tuple(p.shape) for p in getattr(model, name).parameters()]
                trainable += head
                added += sum(math.prod(s) for s in head)
    elif peft == "adapter":
        from studykit import adapters  # the real module of Task 3
        roles, adapter = frozenset(), bottleneck_size
        if config.model_type in adapters.SUPPORTED_MODEL_TYPES:
            adapters.add_adapters(model, bottleneck_size=bottleneck_size)
            trainable = [tuple(p.shape) for p in model.parameters() if p.requires_grad]
            note = f"Houlsby adapters m={bottleneck_size} (studykit.adapters.add_adapters)"
        else:  # same placement and size, counted by formula: add_adapters knows BERT/RoBERTa layers only
            d, m = config.hidden_size, bottleneck_size
            trainable = [(m, d), (m,), (d, m), (d,)] * (2 * arch.layers)
            trainable += [tuple(mod.weight.shape) for mod in model.modules()
                          if "Norm" in type(mod).__name__ and getattr(mod, "weight", None) is not None]
            note = f"Houlsby adapters m={bottleneck_size} (2·L·(2md+m+d), counted; add_adapters is BERT/RoBERTa-only)"
    else:
        raise ValueError(f"unknown peft {peft!r}: use None, 'lora' or 'adapter' (or peft_fraction=...)")
    if peft == "adapter":
        added = adapter_params(arch.layers, arch.hidden, bottleneck_size)
    return dict(arch=arch, base=base_total, total=base_total + added,
                trainable=sum(math.prod(s) for s in trainable), shapes=tuple(trainable), roles=roles,
                norms_trainable=norms_trainable, adapter_size=adapter,
                lora_rank=lora_rank if peft == "lora" else 0,
                lora_per_layer=lora_modules / arch.layers, note=note)


def adapter_params(layers, hidden, bottleneck):
    """Houlsby adapters: two per layer, each 2·m·d weights + m + d biases."""
    return 2 * layers * (2 * bottleneck * hidden + bottleneck + hidden)


def _stats(model, peft=None, lora_rank=16, lora_targets=None, bottleneck_size=64):
    config = get_config(model)
    fields = config.to_dict()
    keep = {k: v for k, v in fields.items() if not k.startswith("_") and k not in ("transformers_version",)}
    targets = tuple(lora_targets) if lora_targets else None
    return _meta_stats(json.dumps(keep, sort_keys=True, default=str), peft, lora_rank, targets, bottleneck_size)


def architecture(model):
    """The layer shape of a shipped name or config (see `Architecture`)."""
    return _stats(model)["arch"]


def count_model_parameters(model, peft=None, lora_rank=16, lora_targets=None, bottleneck_size=64):
    """Exact counts from the meta-device model: `total` (tied weights once), `trainable`, `base`."""
    s = _stats(model, peft, lora_rank, lora_targets, bottleneck_size)
    return dict(total=s["total"], trainable=s["trainable"], base=s["base"],
                percent_trainable=100 * s["trainable"] / s["total"], note=s["note"] or "full fine-tuning")


# ---------------------------------------------------------------------------------------------------
# Bytes per parameter and activations.
# ---------------------------------------------------------------------------------------------------
def _optimizer_state_bytes(optimizer, n, shapes, state_bytes):
    if optimizer == "adamw":
        return 2 * n * state_bytes
    if optimizer == "sgd_momentum":
        return n * state_bytes
    if optimizer == "adam_8bit":
        if shapes is None:
            return 2 * n * (1 + 4 / ADAM8_BLOCK)
        return sum(2 * math.prod(s) * 4 if math.prod(s) < ADAM8_MIN_SIZE
                   else 2 * (math.prod(s) + 4 * math.ceil(math.prod(s) / ADAM8_BLOCK)) for s in shapes)
    if optimizer == "adafactor":
        if shapes is None:
            return n * ADAFACTOR_COUNT_ONLY_RATIO * state_bytes
        return state_bytes * sum(math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1] if len(s) >= 2 else math.prod(s)
                                 for s in shapes)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")


def bytes_per_parameter(precision="mixed", optimizer="adamw"):
    """Bytes per trainable parameter by component (for a large model; Adafactor's is an approximation)."""
    p = _precision(precision)
    out = dict(weights=p["weights"], gradients=p["gradients"],
               optimizer_state=_optimizer_state_bytes(optimizer, 1, None, p["state"]),
               master_weights=p["master_weights"])
    out["total"] = sum(out.values())
    return out


def _precision(name):
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def activation_terms(model, batch_size=4, seq_len=512, precision="mixed", memory_efficient_attention=True,
                     device="cuda", peft=None, lora_rank=16, lora_targets=None, bottleneck_size=64,
                     _stats_=None):
    """Activation bytes term by term: `per_layer` [(term, bytes)], `other` [(term, bytes)], `layers`.

    Korthikanti et al. count, per GPT layer with 16-bit activations and 1-byte dropout masks,
    QKV input 2sbh, Q and K 4sbh, softmax 2as²b, its dropout mask as²b and output 2as²b, V 2sbh,
    projection input 2sbh, dropout mask sbh (attention: 11sbh + 5as²b); MLP input 2sbh, GeLU input
    8sbh and output 8sbh, dropout mask sbh (19sbh); two LayerNorm inputs 4sbh: 34sbh + 5as²b.
    We count the same tensors for the real layer, and what PyTorch actually keeps:
    - the input of a Linear is kept only when its weight is trained: frozen layers (PEFT) need their
      weights, not their inputs, to pass the gradient back;
    - GQA: memory-efficient attention keeps K and V at KV-head size; Hugging Face's eager attention
      repeats them to all heads first; eager decoders compute the softmax in fp32;
    - gated MLP (SwiGLU): gate, activation output, up and product (4 x intermediate);
    - Hugging Face's RMSNorm keeps an fp32 copy of its input, and its normalized output if trained;
    - dropout masks are 1 byte on CUDA (bool), a full tensor on CPU; no mask when p = 0;
    - under PEFT the embeddings are frozen, so the first layer keeps only what its trained parts need;
    - outside the layers: the embedding LayerNorm and dropout (BERT-style), the final norm, the
      output layer's input, and the fp32 log-softmax of the logits (s·b·vocab·4 bytes).
    """
    st = _stats_ or _stats(model, peft, lora_rank, lora_targets, bottleneck_size)
    a: Architecture = st["arch"]
    act = _precision(precision)["activations"]
    mask = 1 if device == "cuda" else act
    T = batch_size * seq_len
    h, f = a.hidden, a.intermediate
    qd, kvd = a.heads * a.head_dim, a.kv_heads * a.head_dim
    roles, norms_trained = st["roles"], st["norms_trainable"]
    norm_in = 4 if a.norm == "rmsnorm" else act

    def layer_terms(grad_from_below):
        """One layer's kept tensors; grad_from_below=False for the first layer over frozen embeddings."""
        terms = []

        def add(name, nbytes, when=True):
            if when and nbytes:
                terms.append((name, int(nbytes)))
        # pre-norm decoders: the attention norm reads the layer input; it keeps it only if a gradient is
        # wanted for it (RMSNorm) or for its weight (LayerNorm). Post-norm encoders read the embedding LN.
        norm1_kept = grad_from_below or (a.norm == "layernorm" and norms_trained) or not a.causal
        add("norm inputs (2)", (1 + norm1_kept) * h * T * norm_in)
        add("RMSNorm outputs (2, trained weight)", 2 * h * T * act, a.norm == "rmsnorm" and norms_trained)
        add("Q/K/V input", h * T * act, bool(roles & {"q", "k", "v"}))
        # which of Q, K, V need a gradient: all, unless nothing below (nor the norm) is trained
        req = {"q", "k", "v"} if grad_from_below or norms_trained else roles & {"q", "k", "v"}
        if memory_efficient_attention:
            add("Q", qd * T * act, bool(req))
            add("K, V (KV heads)", 2 * kvd * T * act, bool(req))
            add("attention output (= projection input)", qd * T * act, bool(req))
            add("softmax log-sum-exp (fp32)", a.heads * T * 4, bool(req))
        else:
            scores = bool(req & {"q", "k"})  # Q·Kᵀ keeps Q for K's gradient and K for Q's
            n = ("k" in req) + ("q" in req) + scores
            add("Q, K, V (K, V repeated to all heads)", n * qd * T * act)
            s2 = a.heads * seq_len * T
            upcast = a.causal  # HF's eager decoders: softmax(..., dtype=float32).to(query.dtype)
            add("softmax output" + (" (fp32)" if upcast and act < 4 else ""), s2 * (4 if upcast else act), scores)
            if a.attention_dropout > 0:
                add("attention dropout mask", s2 * mask, scores)
                add("attention dropout output", s2 * act, "v" in req)
            elif upcast and act < 4:
                add("softmax output cast to 16 bit", s2 * act, "v" in req)
            add("projection input", qd * T * act, "o" in roles)
        add("dropout masks (2)", 2 * h * T * mask, a.hidden_dropout > 0)
        add("MLP input", h * T * act, "up" in roles)
        if a.gated:
            add("gate, activation output, up (3 x intermediate)", 3 * f * T * act)
        else:
            add("activation input (intermediate)", f * T * act)
        add("down-projection input (intermediate)", f * T * act, "down" in roles)
        if st["adapter_size"]:
            m = st["adapter_size"]
            add("adapters (2): input + bottleneck act. input/output", 2 * (h + 2 * m) * T * act)
        if st["lora_rank"]:
            add("LoRA A outputs (r per targeted Linear)", st["lora_per_layer"] * st["lora_rank"] * T * act)
        return terms

    per_layer = layer_terms(True)
    other = []
    full = st["roles"] == ALL_ROLES and norms_trained
    if not a.causal:
        if norms_trained:
            other.append(("embedding LayerNorm input", h * T * act))
            if a.hidden_dropout > 0:
                other.append(("embedding dropout mask", h * T * mask))
        other.append(("classification head", 4 * h * batch_size * act))
    else:
        other.append(("final norm input", h * T * norm_in))
        if a.norm == "rmsnorm" and norms_trained:
            other.append(("final RMSNorm output", h * T * act))
        if full:
            other.append(("output layer input", h * T * act))
        other.append(("log-softmax of the logits (fp32)", a.vocab * T * 4))
    if roles != ALL_ROLES:  # PEFT: embeddings frozen, so no gradient flows into the first layer
        first = sum(b for _, b in layer_terms(False)) - sum(b for _, b in per_layer)
        if first:
            other.append(("first layer: inputs with no gradient from below not kept", first))
    return dict(per_layer=per_layer, other=other, layers=a.layers,
                layer_input=h * T * act, arch=a)


def korthikanti_layer_bytes(model, batch_size, seq_len):
    """Korthikanti et al.'s bytes per GPT layer, s·b·h·(34 + 5·a·s/h), for this model's h and a."""
    a = architecture(model)
    return seq_len * batch_size * a.hidden * (34 + 5 * a.heads * seq_len / a.hidden)


def _activation_bytes(terms, checkpointing):
    layer = sum(b for _, b in terms["per_layer"])
    other = sum(b for _, b in terms["other"])
    if checkpointing:
        # Full recomputation (Korthikanti's 2sbhL): keep each layer's input; during backward one layer's
        # activations are rebuilt and live at once.
        return terms["layers"] * terms["layer_input"] + layer + other
    return terms["layers"] * layer + other


# ---------------------------------------------------------------------------------------------------
# The estimate.
# ---------------------------------------------------------------------------------------------------
def _assumptions(preset, given):
    unknown = set(given) - set(DEFAULT_ASSUMPTIONS)
    if unknown:
        raise TypeError(f"unknown assumption(s) {sorted(unknown)}; known: {', '.join(DEFAULT_ASSUMPTIONS)}")
    if preset not in (None, *PRESETS):
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return {**DEFAULT_ASSUMPTIONS, **PRESETS.get(preset or "standard", {}), **given}


def estimate_memory(model, preset=None, **assumptions):
    """Bytes per component (`COMPONENTS`) and `total`, per GPU, for one training step.

    model: a parameter count (then activations must be given, e.g. by preset="report"), a shipped
      name from `MODEL_CONFIGS`, or a transformers config.
    preset: "report" reproduces the report's accounting; explicit assumptions override it.
    assumptions (defaults in `DEFAULT_ASSUMPTIONS`):
      precision      one of `PRECISIONS`; optimizer one of `OPTIMIZERS`;
      batch_size, seq_len   per-GPU micro-batch;
      checkpointing  full activation recomputation per layer;
      memory_efficient_attention  flash/memory-efficient SDPA (no s² term) vs eager attention;
      peft           None (full fine-tuning), "lora" (lora_rank, lora_targets: module names or
                     ("all-linear",)) or "adapter" (bottleneck_size); or peft_fraction=f: f x N
                     trainable parameters added to the frozen model, as the report assumes;
      zero_stage, num_gpus  ZeRO-1 shards optimizer state and master weights, ZeRO-2 also gradients,
                     ZeRO-3 also weights, over num_gpus data-parallel GPUs;
      device         "cuda" (1-byte dropout masks, CUDA overhead) or "cpu" (float masks, no overhead);
      overhead       True: CUDA_CONTEXT_BYTES + ALLOCATOR_FRACTION of the rest; False: 0; or bytes;
      activations    bytes, or "weights" (as large as the weights, the report's guess), or None: from
                     the architecture.
    """
    o = _assumptions(preset, assumptions)
    p = _precision(o["precision"])
    if o["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {o['optimizer']!r}; choose from {', '.join(OPTIMIZERS)}")
    if o["zero_stage"] not in (0, 1, 2, 3) or int(o["num_gpus"]) < 1:
        raise ValueError("zero_stage must be 0-3 and num_gpus >= 1")
    peft = o["peft"]
    if o["peft_fraction"] is not None:
        if peft is not None:
            raise ValueError("give either peft=... or peft_fraction=..., not both")
        if not 0 < o["peft_fraction"] < 1:
            raise ValueError("peft_fraction is a fraction of the base parameters, between 0 and 1")
        peft = "fraction"

    st = None
    if isinstance(model, (int, float)) and not isinstance(model, bool):
        base = int(model)
        if peft in ("lora", "adapter"):
            raise ValueError("LoRA/adapter sizes need an architecture: pass a shipped name or a config, "
                             "or use peft_fraction=... with a bare parameter count")
        shapes = None
    else:
        st = _stats(model, None if peft == "fraction" else peft, o["lora_rank"], o["lora_targets"],
                    o["bottleneck_size"])
        base = st["base"]
        shapes = st["shapes"] if peft != "fraction" else None
    if peft == "fraction":
        trainable = int(round(o["peft_fraction"] * base))
        total_params = base + trainable
    elif st is not None:
        trainable, total_params = st["trainable"], st["total"]
    else:
        trainable = total_params = base

    out = dict(
        weights=total_params * p["weights"],
        gradients=trainable * p["gradients"],
        optimizer_state=_optimizer_state_bytes(o["optimizer"], trainable, shapes, p["state"]),
        master_weights=trainable * p["master_weights"])

    if o["activations"] is not None:
        out["activations"] = base * p["weights"] if o["activations"] == "weights" else o["activations"]
    elif st is None:
        raise ValueError("a bare parameter count has no architecture to compute activations from: pass "
                         "activations=<bytes> (or 'weights'), preset='report', or a shipped name/config")
    else:
        stats = st if peft != "fraction" else _stats(model)  # fraction: layers as in full fine-tuning
        terms = activation_terms(model, o["batch_size"], o["seq_len"], o["precision"],
                                 o["memory_efficient_attention"], o["device"], _stats_=stats)
        out["activations"] = _activation_bytes(terms, o["checkpointing"])

    n, z = int(o["num_gpus"]), o["zero_stage"]
    if z >= 1:
        out["optimizer_state"] /= n
        out["master_weights"] /= n
    if z >= 2:
        out["gradients"] /= n
    if z >= 3:
        out["weights"] /= n
    out = {k: int(round(v)) for k, v in out.items()}
    if o["overhead"] is True:
        rest = sum(out.values())
        out["overhead"] = 0 if o["device"] == "cpu" else int(CUDA_CONTEXT_BYTES + ALLOCATOR_FRACTION * rest)
    else:
        out["overhead"] = int(o["overhead"] or 0)
    out = {k: out[k] for k in COMPONENTS}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------------------------------------------
# Measurement.
# ---------------------------------------------------------------------------------------------------
def _build_real_model(config, device, dtype):
    """A randomly shaped model from its config, fast: skip the initializers, fill with zeros.

    The values do not change which tensors are kept or how large they are; Hugging Face's
    initialization of 125M parameters costs seconds on a busy CPU.
    """
    cls = _model_class(config)
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: initialize normally
        model = cls.from_config(config)
    else:
        with no_init_weights():
            model = cls.from_config(config)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    return model.to(device=device, dtype=dtype)


def _saved_tensor_recorder(exclude_ptrs):
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in exclude_ptrs and ptr not in seen:
            seen[ptr] = (st.nbytes(), t)  # keep a reference: a live storage keeps its address
        return t
    return seen, pack


def _make_optimizer(name, params):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    if name == "adafactor":
        from transformers.optimization import Adafactor
        return Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=False, warmup_init=False)
    if name == "adam_8bit":
        import bitsandbytes as bnb  # noqa: needs CUDA
        return bnb.optim.AdamW8bit(params, lr=1e-5)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def measure_memory(model="roberta-base", batch_size=2, seq_len=64, precision="fp32", optimizer="adamw",
                   peft=None, bottleneck_size=64, lora_rank=16, lora_targets=None, attn_implementation="eager",
                   device=None, seed=0):
    """Bytes per component of one real training step (same keys as `estimate_memory`).

    The model is built from its config (random shapes, no download). Parameters, gradients and
    optimizer state are measured by their sizes after the step; activations are the tensors autograd
    saved for backward during the forward pass (`torch.autograd.graph.saved_tensors_hooks`), each
    storage counted once and parameters left out. On CPU `overhead` is 0 and `total` their sum; on
    CUDA `total` is `torch.cuda.max_memory_allocated` over a second step, and `overhead` what it holds
    beyond the components (temporaries at the peak). precision: "fp32" or "bf16" (pure bf16; mixed
    precision with autocast keeps 16-bit weight copies that would land among the activations).
    peft: None, "adapter" (Task 3's `add_adapters`) or "lora" (the `peft` library, if installed:
    LoRA without dropout on `lora_targets`, the classification head trained as peft does).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError("measure_memory supports precision 'fp32' or 'bf16' (pure); see its docstring")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = get_config(model)
    config = config.__class__.from_dict(config.to_dict())  # a copy we may change
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    net = _build_real_model(config, device, torch.float32 if precision == "fp32" else torch.bfloat16)
    if peft == "adapter":
        from studykit.adapters import add_adapters
        add_adapters(net, bottleneck_size=bottleneck_size)
    elif peft == "lora":
        from peft import LoraConfig, get_peft_model  # optional: pip install peft
        targets = list(lora_targets or LORA_DEFAULT_TARGETS.get(config.model_type, LORA_DEFAULT_TARGETS_DECODER))
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5: not our concern
            warnings.simplefilter("ignore", FutureWarning)
            net = get_peft_model(net, LoraConfig(
                r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=targets,
                task_type="SEQ_CLS" if _is_encoder(config) else "CAUSAL_LM"))
    elif peft is not None:
        raise ValueError("measure_memory supports peft=None, 'adapter' or 'lora'")
    net.train()
    params = list(net.parameters())
    trainable = [p for p in params if p.requires_grad]
    opt = _make_optimizer(optimizer, trainable)
    ids = torch.randint(3, config.vocab_size, (batch_size, seq_len), device=device)
    labels = torch.randint(0, config.num_labels, (batch_size,), device=device) if _is_encoder(config) else ids
    cuda = device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        seen, pack = _saved_tensor_recorder({p.untyped_storage().data_ptr() for p in params})
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = net(input_ids=ids, labels=labels).loss
        saved = sum(nbytes for nbytes, _ in seen.values())
        seen.clear()
        loss.backward()
        opt.step()
        return saved

    if cuda:
        step()  # the optimizer creates its state in the first step
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    activations = step()
    out = dict(weights=sum(p.nbytes for p in params),
               gradients=sum(p.grad.nbytes for p in trainable if p.grad is not None),
               optimizer_state=_state_bytes(opt), master_weights=0, activations=activations, overhead=0)
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        out["overhead"] = max(0, peak - sum(out.values()))
        out["total"] = max(peak, sum(out.values()))
    else:
        out["total"] = sum(out.values())
    del net, opt
    return out


def _state_bytes(opt):
    seen, total = set(), 0
    for state in opt.state.values():
        for v in state.values():
            if torch.is_tensor(v) and v.untyped_storage().data_ptr() not in seen:
                seen.add(v.untyped_storage().data_ptr())
                total += v.untyped_storage().nbytes()
    return total


# The estimate must stay within these relative errors of the CPU measurement (checked in the tests).
# It counts every kept tensor of size O(s·b·h), O(s·b·intermediate), O(a·s²·b) or O(s·b·vocab) and
# skips only per-token scalars (norm mean/rstd: 4-8 bytes per token per norm), token ids, RoPE
# cos/sin and loss bookkeeping: about 5 scalars per token per layer against >= 15 vectors of width
# h, i.e. 5/(15·h) = 0.13 % at h = 256 (measured: -0.03 % to -0.21 % on every validation case, full,
# adapters and LoRA). 1 % leaves room for library-version noise in those small pieces, while a missed
# or double-counted tensor of width h in a layer (>= 1/25 of the layer, 4 %) fails. Weights, gradients
# and optimizer state are counted exactly (step counters aside), so the total gets the same 1 %.
ACTIVATION_TOLERANCE = 0.01
TOTAL_TOLERANCE = 0.01


def validation_cases(profile="fast"):
    """Cases (model, PEFT, precision, attention, batch, sequence, optimizer) that run on a CPU."""
    cases = [
        dict(model="roberta-base", peft=None, batch_size=2, seq_len=64),
        dict(model="roberta-base", peft="adapter", batch_size=2, seq_len=64),
        dict(model="roberta-mini", peft=None, batch_size=4, seq_len=128),
        dict(model="roberta-mini", peft="adapter", batch_size=8, seq_len=32),
        dict(model="llama-mini", peft=None, batch_size=4, seq_len=128),
        dict(model="llama-mini", peft=None, batch_size=4, seq_len=128, attn_implementation="sdpa"),
        dict(model="llama-mini", peft=None, batch_size=2, seq_len=128, attn_implementation="sdpa",
             precision="bf16"),
        dict(model="llama-mini", peft=None, batch_size=2, seq_len=64, optimizer="sgd_momentum"),
        dict(model="llama-mini", peft=None, batch_size=2, seq_len=64, optimizer="adafactor"),
    ]
    if _peft_installed():  # LoRA is measured with the peft library when it is there
        cases += [dict(model="roberta-mini", peft="lora", batch_size=4, seq_len=64),
                  dict(model="llama-mini", peft="lora", batch_size=4, seq_len=128, attn_implementation="sdpa")]
    if profile != "fast":
        cases += [dict(model="roberta-base", peft=None, batch_size=4, seq_len=128),
                  dict(model="roberta-base", peft="adapter", batch_size=4, seq_len=128),
                  dict(model="llama-mini", peft=None, batch_size=8, seq_len=256, attn_implementation="sdpa")]
    return cases


def _peft_installed():
    import importlib.util
    return importlib.util.find_spec("peft") is not None


def validate_estimates(cases=None, profile="fast"):
    """Estimated vs measured bytes for each case, as a pandas DataFrame (CPU or GPU as available)."""
    import pandas as pd
    rows = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for case in cases or validation_cases(profile):
        c = dict(dict(precision="fp32", optimizer="adamw", attn_implementation="eager"), **case)
        measured = measure_memory(c["model"], c["batch_size"], c["seq_len"], c["precision"], c["optimizer"],
                                  peft=c["peft"], attn_implementation=c["attn_implementation"], device=device)
        estimated = estimate_memory(c["model"], precision=c["precision"], optimizer=c["optimizer"],
                                    batch_size=c["batch_size"], seq_len=c["seq_len"], peft=c["peft"],
                                    memory_efficient_attention=c["attn_implementation"] != "eager",
                                    device=device, overhead=False)
        est_total = estimated["total"]
        meas_total = measured["total"] - measured["overhead"]  # the overhead is not modelled per case
        rows.append(dict(
            model=c["model"], method=c["peft"] or "full", precision=c["precision"],
            optimizer=c["optimizer"], attention=c["attn_implementation"], batch=c["batch_size"],
            seq=c["seq_len"],
            est_activations_MB=estimated["activations"] / 1e6, meas_activations_MB=measured["activations"] / 1e6,
            activations_err_pct=100 * (estimated["activations"] / measured["activations"] - 1),
            est_total_MB=est_total / 1e6, meas_total_MB=meas_total / 1e6,
            total_err_pct=100 * (est_total / meas_total - 1)))
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------
# Presentation: tables, figure, widgets.
# ---------------------------------------------------------------------------------------------------
def format_bytes(n):
    return f"{n / GB:,.2f} GB"


def gpus_that_fit(total_bytes, gpus=None):
    """Names of the GPUs (from `GPUS`) whose memory holds `total_bytes`."""
    return [name for name, cap in (gpus or GPUS).items() if total_bytes <= cap]


def breakdown_table(breakdowns):
    """GB per component (rows) for each labelled breakdown (columns)."""
    import pandas as pd
    return pd.DataFrame({label: {k: b[k] / GB for k in (*COMPONENTS, "total")}
                         for label, b in breakdowns.items()}).round(2)


COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer_state": "#c44e52",
          "master_weights": "#8172b3", "activations": "#55a868", "overhead": "#937860"}


def plot_memory_breakdown(breakdowns, gpus=None, title=None, ax=None, save_to=None):
    """Stacked bars, one per labelled breakdown, with the GPU sizes as dashed lines."""
    import matplotlib.pyplot as plt
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4.2))
    labels = list(breakdowns)
    bottom = [0.0] * len(labels)
    for comp in COMPONENTS:
        vals = [breakdowns[l][comp] / GB for l in labels]
        ax.bar(labels, vals, bottom=bottom, color=COLORS[comp], label=comp.replace("_", " "), width=0.55)
        bottom = [b + v for b, v in zip(bottom, vals)]
    top = max(bottom) if bottom else 1
    for name, cap in (gpus or GPUS).items():
        if cap / GB <= 1.15 * top:
            ax.axhline(cap / GB, color="grey", ls="--", lw=0.8)
            ax.text(len(labels) - 0.5, cap / GB, name, va="bottom", ha="right", fontsize=8, color="dimgrey")
    for i, b in enumerate(bottom):
        ax.text(i, b, f"{b:.1f} GB", ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("GB per GPU")
    ax.set_ylim(0, 1.2 * top)
    ax.set_title(title or "Training memory per GPU", fontsize=10)
    ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1.0, 0.92) if len(labels) > 1 else None)
    fig.tight_layout()
    if save_to:
        os.makedirs(os.path.dirname(str(save_to)) or ".", exist_ok=True)
        fig.savefig(save_to, dpi=110)
    return fig


def _peft_assumptions(method, size):
    if method == "lora":
        return dict(peft="lora", lora_rank=int(size))
    if method == "adapter":
        return dict(peft="adapter", bottleneck_size=int(size))
    if method == "fraction":
        return dict(peft_fraction=float(size) / 100)
    raise ValueError(f"unknown PEFT method {method!r}: lora, adapter or fraction (size in %)")


def memory_summary(model, peft_method="lora", peft_size=16, **assumptions):
    """Full and PEFT breakdowns for the same assumptions, and a one-paragraph text saying what fits."""
    full = estimate_memory(model, **assumptions)
    peft = estimate_memory(model, **_peft_assumptions(peft_method, peft_size), **assumptions)
    what = {"lora": f"LoRA r={peft_size}", "adapter": f"adapters m={peft_size}",
            "fraction": f"{peft_size} % trainable"}[peft_method]
    saving = 1 - peft["total"] / full["total"]

    def fits(b):
        names = gpus_that_fit(b["total"])
        return ", ".join(names) if names else "none of the listed GPUs"
    text = (f"Full fine-tuning: {format_bytes(full['total'])} per GPU, fits: {fits(full)}. "
            f"PEFT ({what}): {format_bytes(peft['total'])}, fits: {fits(peft)}. "
            f"Saving: {format_bytes(full['total'] - peft['total'])} ({100 * saving:.0f} %).")
    return {"Full fine-tuning": full, f"PEFT ({what})": peft}, text


def memory_explorer(model="llama-3.2-3b", peft_method="lora", peft_size=16, **assumptions):
    """Widgets: every assumption as a control, a stacked bar chart (full vs PEFT) and a fit line.

    Returns a VBox with `.controls` (name -> widget), `.summary` (the HTML text) and `.refresh()`.
    """
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import display

    o = _assumptions(None, assumptions)
    names = list(MODEL_CONFIGS)
    style, wide = {"description_width": "110px"}, W.Layout(width="330px")
    c = dict(
        model=W.Dropdown(options=names, value=model, description="model", style=style, layout=wide),
        precision=W.Dropdown(options=list(PRECISIONS), value=o["precision"], description="precision",
                             style=style, layout=wide),
        optimizer=W.Dropdown(options=list(OPTIMIZERS), value=o["optimizer"], description="optimizer",
                             style=style, layout=wide),
        batch_size=W.Dropdown(options=[1, 2, 4, 8, 16, 32, 64], value=o["batch_size"], description="batch size",
                              style=style, layout=wide),
        seq_len=W.Dropdown(options=[128, 256, 512, 1024, 2048, 4096, 8192], value=o["seq_len"],
                           description="sequence length", style=style, layout=wide),
        checkpointing=W.Checkbox(value=o["checkpointing"], description="activation checkpointing", indent=False),
        memory_efficient_attention=W.Checkbox(value=o["memory_efficient_attention"],
                                              description="memory-efficient attention", indent=False),
        peft_method=W.Dropdown(options=[("LoRA (rank)", "lora"), ("adapters (bottleneck)", "adapter"),
                                        ("trainable %", "fraction")], value=peft_method,
                               description="PEFT method", style=style, layout=wide),
        peft_size=W.Dropdown(options=[0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256], value=peft_size,
                             description="PEFT size", style=style, layout=wide),
        zero_stage=W.Dropdown(options=[0, 1, 2, 3], value=o["zero_stage"], description="ZeRO stage",
                              style=style, layout=wide),
        num_gpus=W.Dropdown(options=[1, 2, 4, 8, 16, 64], value=o["num_gpus"], description="GPUs",
                            style=style, layout=wide),
    )
    summary = W.HTML()
    summary.add_class("memory-summary")
    plot = W.Output()

    def refresh(*_):
        v = {k: w.value for k, w in c.items()}
        size = v.pop("peft_size")
        if v["peft_method"] != "fraction":
            size = max(1, int(size))
        try:
            breakdowns, text = memory_summary(v.pop("model"), v.pop("peft_method"), size, **v)
        except (ValueError, TypeError) as e:
            summary.value = f"<b>Cannot estimate:</b> {e}"
            return
        summary.value = f"<div style='max-width:760px'>{text}</div>"
        with plot:
            plot.clear_output(wait=True)
            fig = plot_memory_breakdown(breakdowns, title=f"{c['model'].value}, {c['precision'].value}, "
                                        f"{c['optimizer'].value}, batch {c['batch_size'].value} x "
                                        f"{c['seq_len'].value} tokens")
            display(fig)
            plt.close(fig)

    for w in c.values():
        w.observe(refresh, names="value")
    keys = list(c)
    left, right = W.VBox([c[k] for k in keys[:6]]), W.VBox([c[k] for k in keys[6:]])
    box = W.VBox([W.HBox([left, right]), summary, plot])
    box.controls, box.summary, box.refresh = c, summary, refresh
    refresh()
    return box


def describe_machine():
    """One line naming the hardware this notebook ran on."""
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"GPU: {torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}"
    name = cpu_name()
    return (f"CPU only: {name}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads; no CUDA device")
