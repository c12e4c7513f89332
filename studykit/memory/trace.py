"""The traced count: run the real transformers model on fake tensors and add up what autograd keeps.

The model is built and run forward under `torch._subclasses.FakeTensorMode`: every tensor has its
real shape, dtype and device but no memory, so a 3B model at 4 x 512 is traced in seconds on a laptop.
`saved_tensors_hooks` sees each tensor autograd saves for backward, exactly as `measure_memory` does
on a real step; each storage is counted once and parameters are left out. This is exact for any
architecture transformers can build from a config, for each attention implementation and scheme.

A fake CUDA device needs a CUDA build of torch, so `device="cuda"` is traced on CPU kernels with the
two differences that change what is kept made explicit: dropout keeps a 1-byte mask
(`torch.native_dropout`, what CUDA runs) instead of CPU's full-size float mask, and SDPA uses a fused
kernel even with attention dropout (CPU falls back to the math path and keeps the probabilities).
"""
from __future__ import annotations

import contextlib
import functools
import json
import warnings

import torch

from ..adapters import DEFAULT_ADAPTER_SIZE
from .catalog import LORA_DEFAULT_TARGETS, LORA_DEFAULT_TARGETS_DECODER, _is_encoder, get_config, model_class

__all__ = ["traced_activations", "build_model", "apply_method", "training_inputs", "SCHEME_DTYPES"]

# The dtype the model is built in and the autocast dtype, per precision scheme. The accounting schemes
# "mixed" and "mixed_fp32_grads" run their forward in 16 bit, like pure bf16.
SCHEME_DTYPES = {"fp32": (torch.float32, None), "bf16": (torch.bfloat16, None),
                 "mixed": (torch.bfloat16, None), "mixed_fp32_grads": (torch.bfloat16, None),
                 "autocast": (torch.float32, torch.bfloat16)}


def lora_targets_for(config, lora_targets=None):
    """LoRA target module names: given, ours for the shipped families, else peft's default for the type."""
    if lora_targets:
        return list(lora_targets)
    if config.model_type in LORA_DEFAULT_TARGETS:
        return list(LORA_DEFAULT_TARGETS[config.model_type])
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_defaults
    except ImportError:
        peft_defaults = {}
    return list(peft_defaults.get(config.model_type, LORA_DEFAULT_TARGETS_DECODER))


def apply_method(net, config, peft=None, adapter_size=DEFAULT_ADAPTER_SIZE, lora_rank=16, lora_targets=None):
    """Full fine-tuning (None), Task 3's Houlsby adapters ("adapter") or LoRA with peft ("lora")."""
    if peft is None:
        return net
    if peft == "adapter":
        from studykit import adapters
        if config.model_type not in adapters.SUPPORTED_MODEL_TYPES:
            raise ValueError(f"our adapters support {', '.join(adapters.SUPPORTED_MODEL_TYPES)}, not "
                             f"{config.model_type!r}; use peft='lora' for this architecture")
        adapters.add_adapters(net, adapter_size=adapter_size)
        return net
    if peft == "lora":
        from peft import LoraConfig, get_peft_model  # pip install peft
        task = "SEQ_CLS" if _is_encoder(config) else ("SEQ_2_SEQ_LM" if config.is_encoder_decoder else "CAUSAL_LM")
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5: not our concern
            warnings.simplefilter("ignore")
            return get_peft_model(net, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                                                  target_modules=lora_targets_for(config, lora_targets),
                                                  task_type=task))
    raise ValueError(f"unknown peft {peft!r}: use None (full fine-tuning), 'adapter' or 'lora'")


def build_model(config, device, dtype, attn_implementation="eager", init=True):
    """The model transformers builds from `config`, in `dtype` on `device`, in training mode."""
    config = config.__class__.from_dict(config.to_dict())  # a copy we may change
    config._attn_implementation = attn_implementation
    cls = model_class(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if init:
            with torch.device(device):
                net = cls.from_config(config, dtype=dtype)
        else:  # real tensors: skip the initializers (seconds for 125M parameters), values do not matter
            from transformers.initialization import no_init_weights
            with no_init_weights(), torch.device(device):
                net = cls.from_config(config, dtype=dtype)
            net.tie_weights()  # skipped with the initializers; training from pretrained weights ties them
            with torch.no_grad():
                for p in net.parameters():
                    p.zero_()
    return net.train()


def training_inputs(config, batch_size, seq_len, device):
    """Token ids and labels for one training step (a label per sequence for classifiers, else per token)."""
    ids = torch.randint(3, config.vocab_size, (batch_size, seq_len), device=device)
    if _is_encoder(config):
        return dict(input_ids=ids, labels=torch.randint(0, config.num_labels, (batch_size,), device=device))
    return dict(input_ids=ids, labels=ids.clone())


def saved_tensor_counter(params):
    """A pack hook counting each saved storage once (keyed by the storage object), parameters left out.

    A parameter is recognised by its storage, or by identity (itself or a view of it): a deep-copied
    fake parameter (peft's trained copy of the head) does not always report the same storage.
    """
    seen = {}
    exclude = {p.untyped_storage()._cdata for p in params}
    ids = {id(p) for p in params}

    def pack(t):
        st = t.untyped_storage()
        key = st._cdata
        if key not in exclude and key not in seen and id(t) not in ids and id(t._base) not in ids:
            seen[key] = (st.nbytes(), t)  # keep a reference: a live storage keeps its key
        return t
    return seen, pack


@contextlib.contextmanager
def _cuda_kernels():
    """Make CPU kernels keep what CUDA's keep: 1-byte dropout masks, fused SDPA even with dropout."""
    F = torch.nn.functional
    dropout, sdpa = F.dropout, F.scaled_dot_product_attention

    def cuda_dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        return torch.native_dropout(input, p, True)[0]

    def fused_sdpa(*args, **kwargs):
        kwargs["dropout_p"] = 0.0  # the fused kernels regenerate their dropout from a seed: no mask kept
        if len(args) > 4:
            args = args[:4] + (0.0,) + args[5:]
        return sdpa(*args, **kwargs)
    F.dropout, F.scaled_dot_product_attention = cuda_dropout, fused_sdpa
    try:
        yield
    finally:
        F.dropout, F.scaled_dot_product_attention = dropout, sdpa


@contextlib.contextmanager
def _fake_friendly():
    """Two things fake tensors refuse, worked around while tracing: initializers that read values
    (`trunc_normal_` of our adapters: values do not change what is kept) become no-ops, and `Module.to`
    (fake parameters cannot be swapped in place) returns the module when nothing changes, else gives
    it new parameters. peft's move of new LoRA weights is skipped: they are created on CPU already, in
    fp32, where peft keeps them (autocast_adapter_dtype)."""
    trunc, to = torch.nn.init.trunc_normal_, torch.nn.Module.to
    torch.nn.init.trunc_normal_ = lambda tensor, *a, **k: tensor
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
        move = BaseTunerLayer._move_adapter_to_device_of_base_layer
    except ImportError:
        BaseTunerLayer = move = None

    def to_unless_there(self, *args, **kwargs):  # peft's `module.to(weight.device)`: a no-op here
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        tensors = [*self.parameters(), *self.buffers()]
        if all((device is None or t.device == device) and (dtype is None or t.dtype == dtype) for t in tensors):
            return self
        for m in self.modules():  # new parameters instead of in-place swaps (new modules only: no ties)
            for k, p in m._parameters.items():
                if p is not None:
                    cast = p.detach().to(device=device, dtype=dtype if p.is_floating_point() else None)
                    m._parameters[k] = torch.nn.Parameter(cast, requires_grad=p.requires_grad)
            for k, b in m._buffers.items():
                if b is not None:
                    m._buffers[k] = b.to(device=device, dtype=dtype if b.is_floating_point() else None)
        return self
    if BaseTunerLayer is not None:
        BaseTunerLayer._move_adapter_to_device_of_base_layer = lambda self, *a, **k: None
    torch.nn.Module.to = to_unless_there
    try:
        yield
    finally:
        if BaseTunerLayer is not None:
            BaseTunerLayer._move_adapter_to_device_of_base_layer = move
        torch.nn.Module.to, torch.nn.init.trunc_normal_ = to, trunc


def _count_step(config, batch_size, seq_len, precision, attn_implementation, device, method, checkpointing):
    from torch._subclasses.fake_tensor import FakeTensorMode
    dtype, autocast = SCHEME_DTYPES[precision]
    kernels = _cuda_kernels() if device == "cuda" else contextlib.nullcontext()
    with FakeTensorMode(allow_non_fake_inputs=True), kernels, _fake_friendly():
        net = apply_method(build_model(config, "cpu", dtype, attn_implementation), config, **method)
        if checkpointing:
            if hasattr(net, "activation_checkpointing_enable"):  # transformers >= 5 names it so
                net.activation_checkpointing_enable(dict(use_reentrant=False))
            else:
                net.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(use_reentrant=False))
        params = list(net.parameters())
        seen, pack = saved_tensor_counter(params)
        inputs = training_inputs(config, batch_size, seq_len, "cpu")
        amp = torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp:
            net(**inputs)
        saved = sum(n for n, _ in seen.values())
        counts = dict(total=sum(p.numel() for p in params),
                      trainable=sum(p.numel() for p in params if p.requires_grad),
                      shapes=tuple(tuple(p.shape) for p in params if p.requires_grad))
    return saved, counts


@functools.lru_cache(maxsize=256)
def _traced(config_json, batch_size, seq_len, precision, attn_implementation, device, method_items, checkpointing):
    from transformers import AutoConfig
    fields = json.loads(config_json)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    method = dict(method_items)
    saved, counts = _count_step(config, batch_size, seq_len, precision, attn_implementation, device, method,
                                checkpointing)
    out = dict(activations=saved, **counts)
    if checkpointing:  # during backward one layer's activations are rebuilt and live at once
        layers = config.num_hidden_layers
        less = config.__class__.from_dict({**config.to_dict(), "num_hidden_layers": layers - 1})
        fewer = _count_step(less, batch_size, seq_len, precision, attn_implementation, device, method, False)[0]
        full = _count_step(config, batch_size, seq_len, precision, attn_implementation, device, method, False)[0]
        out["activations"] += full - fewer
    return out


def config_key(config):
    """A hashable JSON form of a config (for caches)."""
    fields = config.to_dict()
    keep = {k: v for k, v in fields.items() if not k.startswith("_") and k not in ("transformers_version",)}
    return json.dumps(keep, sort_keys=True, default=str)


def traced_activations(model, batch_size=4, seq_len=512, precision="mixed", attn_implementation="sdpa",
                       device="cuda", peft=None, adapter_size=DEFAULT_ADAPTER_SIZE, lora_rank=16, lora_targets=None,
                       checkpointing=False):
    """Bytes autograd keeps for backward in one training step, and the parameter counts of that model.

    Returns dict(activations=bytes, total=parameters, trainable=parameters, shapes=trainable shapes).
    model: a shipped name or a transformers config; precision: a scheme of `SCHEME_DTYPES`;
    device: "cpu" or "cuda" (see the module docstring); checkpointing: full recomputation per layer
    (transformers' gradient checkpointing) plus one layer rebuilt during backward.
    """
    if precision not in SCHEME_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(SCHEME_DTYPES)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    config = get_config(model)
    method = dict(peft=peft)
    if peft == "adapter":
        method["adapter_size"] = int(adapter_size)
    elif peft == "lora":
        method.update(lora_rank=int(lora_rank), lora_targets=tuple(lora_targets) if lora_targets else None)
    try:
        return _traced(config_key(config), int(batch_size), int(seq_len), precision, attn_implementation or "eager",
                       device, tuple(sorted(method.items())), bool(checkpointing))
    except (ValueError, TypeError, ImportError):
        raise
    except Exception as e:  # an architecture the fake-tensor run cannot handle: say which, and why
        raise ValueError(f"cannot trace {config.model_type!r} ({type(e).__name__}: {e}); the traced count "
                         "needs a model transformers can build from its config (AutoModelForSequenceClassification "
                         "for encoders, AutoModelForSeq2SeqLM, AutoModelForCausalLM)") from e
