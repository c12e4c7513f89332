"""Houlsby bottleneck adapters for BERT-like encoders (our own; no adapter library, no peft).

Houlsby et al. 2019 (arXiv:1902.00751) and its reference code github.com/google-research/adapter-bert:
two adapters per layer, after the attention and the feed-forward output projections; only adapters,
LayerNorms and the classification head train. We wrap modules of a loaded Hugging Face model (no
copied model code): each sub-layer's `dropout` becomes `adapter(dropout(x))`, giving projection -> dropout
-> adapter -> LayerNorm(x + residual), the reference code's order; base parameter names are unchanged.

The two places are found by their role, not by class or attribute names: in each layer of
`base_model.encoder.layer`, a residual sub-layer is the module that owns a LayerNorm and a Dropout (the
dropout between its output projection and LayerNorm(x + residual)). BERT/RoBERTa have them at
`attention.output` (projection `dense`) and `output`; MPNet at `attention` (projection `attn.o`) and `output`.
"""
import json
import warnings

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers.activations import ACT2FN

__all__ = ["BottleneckAdapter", "add_adapters", "has_adapters", "count_parameters", "format_parameter_report",
           "adapter_parameter_count", "adapter_state_dict", "save_adapters", "load_adapters",
           "residual_sublayers", "DEFAULT_ADAPTER_SIZE", "DEFAULT_ACTIVATION", "SUPPORTED_MODEL_TYPES"]

DEFAULT_ADAPTER_SIZE = 64  # Houlsby et al. 2019 search {8, 64, 256}; 64 is adapter-bert's default
DEFAULT_ACTIVATION = "gelu"  # adapter-bert `feedforward_adapter` uses gelu (its tanh form = "gelu_new")
DOWN_INIT_STD = 1e-3  # adapter-bert `init_scale=1e-3`, truncated normal: "near-identity initialization"
# The up-projection starts at zero (Houlsby used the same small normal as the down-projection):
# then each adapter is exactly the identity and the adapted model equals the base model at init.
# Families whose layers were checked to have the two residual sub-layers where adapter-bert puts adapters
# (tests/test_adapters.py); add_adapters finds the places by role, so any post-LayerNorm BERT-like encoder works.
SUPPORTED_MODEL_TYPES = ("bert", "camembert", "roberta", "xlm-roberta", "mpnet")
HEAD_NAMES = ("classifier", "score")  # the task head stays trainable, as in peft's modules_to_save
SETTINGS = ("adapter_size", "activation", "train_layer_norm")  # saved with the weights


class BottleneckAdapter(nn.Module):
    """x + up(act(down(x))): d -> m -> d with a residual, the identity at initialization."""

    def __init__(self, hidden_size, adapter_size=DEFAULT_ADAPTER_SIZE, activation=DEFAULT_ACTIVATION):
        super().__init__()
        self.down = nn.Linear(hidden_size, adapter_size)
        self.act = ACT2FN[activation]
        self.up = nn.Linear(adapter_size, hidden_size)
        # Truncated at 2 std like TensorFlow's truncated_normal_initializer used by adapter-bert.
        nn.init.trunc_normal_(self.down.weight, std=DOWN_INIT_STD, a=-2 * DOWN_INIT_STD, b=2 * DOWN_INIT_STD)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return x + self.up(self.act(self.down(x)))


class WithAdapter(nn.Module):
    """Runs `inner` (the sub-layer's dropout), then the adapter; the wrapped module keeps its role."""

    def __init__(self, inner, adapter):
        super().__init__()
        self.inner, self.adapter = inner, adapter

    def forward(self, x):
        return self.adapter(self.inner(x))


def adapter_parameter_count(num_layers, hidden_size, adapter_size=DEFAULT_ADAPTER_SIZE):
    """Parameters added by Houlsby adapters: two per layer, each 2·m·d weights + m + d biases."""
    return 2 * num_layers * (2 * adapter_size * hidden_size + adapter_size + hidden_size)


def has_adapters(model):
    """True once add_adapters (or load_adapters) has run on this model."""
    return any(isinstance(m, BottleneckAdapter) for m in model.modules())


def residual_sublayers(layer):
    """The sub-layers of one encoder layer where adapters go, in order (attention's, then the feed-forward's):
    [(module, name of its dropout, its output projection)], each module owning a LayerNorm and a Dropout
    (the Dropout already wrapped with its adapter, once add_adapters has run).

    The output projection is the last Linear inside the module that maps to the LayerNorm's width (BERT's
    `attention.output.dense`, MPNet's `attention.attn.o`); a module lacking one is not a residual sub-layer.
    """
    found = []
    for module in layer.modules():
        children = dict(module.named_children())
        norms = [c for c in children.values() if isinstance(c, nn.LayerNorm)]
        dropouts = [n for n, c in children.items() if isinstance(getattr(c, "inner", c), nn.Dropout)]  # or wrapped
        if len(norms) != 1 or len(dropouts) != 1:
            continue
        width = norms[0].normalized_shape[-1]
        projections = [m for n, m in module.named_modules() if isinstance(m, nn.Linear)
                       and m.out_features == width and not n.startswith(dropouts[0] + ".")]  # not the adapter's
        if projections:
            found.append((module, dropouts[0], projections[-1]))
    return found


def _unsupported(model, problem):
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    return ValueError(
        f"add_adapters cannot place adapters in model type '{model_type}': {problem}. Adapters go in "
        "post-LayerNorm BERT-like encoders (checked: " + ", ".join(SUPPORTED_MODEL_TYPES) + "), whose layers "
        "`base_model.encoder.layer[i]` each have two residual sub-layers, attention then feed-forward, each a "
        "module owning a LayerNorm and a Dropout with an output projection (Linear) to the hidden size: "
        "projection -> dropout -> LayerNorm(x + residual). Use such a model, or LoRA (method='lora').")


def _adapter_places(model):
    """Every (module, dropout name, projection) where an adapter goes, two per layer; or a ValueError
    naming what this architecture lacks."""
    encoder = getattr(getattr(model, "base_model", model), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        base = type(getattr(model, "base_model", model)).__name__
        raise _unsupported(model, f"its base model ({base}) has no `encoder.layer` list of transformer layers")
    places = []
    for i, layer in enumerate(layers):
        sublayers = residual_sublayers(layer)
        if len(sublayers) != 2:
            names = {m: n for n, m in layer.named_modules()}
            seen = ", ".join(f"'{names[m]}'" for m, _, _ in sublayers) or "none"
            raise _unsupported(model, f"layer {i} ({type(layer).__name__}) has {len(sublayers)} residual "
                                      f"sub-layers ({seen}), not 2")
        places += sublayers
    return places


def add_adapters(model, adapter_size=DEFAULT_ADAPTER_SIZE, train_layer_norm=True,
                 activation=DEFAULT_ACTIVATION):
    """Insert two adapters per layer and freeze all but adapters, LayerNorms and head; in place.

    LayerNorms are trained by default because adapter-bert trains its `layer_norm` collection
    (embeddings' LayerNorm included). BERT's pooler stays frozen: adapter-bert trains only
    adapters, layer norms and the output layer (`adapters`, `layer_norm`, `head` collections).
    """
    if has_adapters(model):
        raise ValueError("this model already has adapters; call add_adapters once, on a fresh base model")
    places = _adapter_places(model)
    if not (isinstance(adapter_size, int) and adapter_size > 0):
        raise ValueError(f"adapter_size must be a positive int, got {adapter_size!r}")

    model.requires_grad_(False)
    for sub, dropout_name, projection in places:
        w = projection.weight  # its device/dtype: adapters follow the model (also onto "meta")
        adapter = BottleneckAdapter(w.shape[0], adapter_size, activation).to(w.device, w.dtype)
        # adapter params are trainable (fresh)
        setattr(sub, dropout_name, WithAdapter(getattr(sub, dropout_name), adapter))
    trained = [m for m in model.modules() if train_layer_norm and isinstance(m, nn.LayerNorm)]
    trained += [getattr(model, n) for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]
    for m in trained:
        m.requires_grad_(True)
    model.adapter_settings = dict(zip(SETTINGS, (adapter_size, activation, train_layer_norm)))
    return model


def _component(name, layer_norm_names):
    """Which part of the model a parameter belongs to (first match wins)."""
    if ".adapter." in name:
        return "adapters"
    if name in layer_norm_names:
        return "layer_norm"
    if name.split(".")[0] in HEAD_NAMES:
        return "head"
    for part in ("embeddings", "pooler", "encoder"):
        if f".{part}." in f".{name}":
            return part
    return "other"


def count_parameters(model):
    """Trainable and total parameters, overall and by component; numbers only (see format_...)."""
    ln = {f"{mn}.{pn}" if mn else pn for mn, m in model.named_modules() if isinstance(m, nn.LayerNorm)
          for pn, _ in m.named_parameters(recurse=False)}
    by_component = {}
    for name, p in model.named_parameters():
        c = by_component.setdefault(_component(name, ln), {"trainable": 0, "total": 0})
        c["total"] += p.numel()
        c["trainable"] += p.numel() if p.requires_grad else 0
    trainable, total = (sum(c[k] for c in by_component.values()) for k in ("trainable", "total"))
    return dict(trainable=trainable, total=total, percent_trainable=100 * trainable / total,
                by_component=by_component)


def format_parameter_report(counts):
    """A small fixed-width table of `count_parameters` output, for notebooks and logs."""
    rows = [f"{'component':<12}{'trainable':>14}{'total':>14}"]
    rows += [f"{k:<12}{v['trainable']:>14,}{v['total']:>14,}" for k, v in counts["by_component"].items()]
    rows.append(f"{'all':<12}{counts['trainable']:>14,}{counts['total']:>14,}"
                f"   ({counts['percent_trainable']:.2f} % trainable)")
    return "\n".join(rows)


def adapter_state_dict(model):
    """The trainable parameters only (adapters, LayerNorms, head): what an adapter run learned."""
    if not has_adapters(model):
        raise ValueError("model has no adapters; call add_adapters first")
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_adapters(model, path):
    """Write the trainable parameters to a safetensors file; settings go in its metadata."""
    meta = {k: json.dumps(v) for k, v in model.adapter_settings.items()}
    meta.update(model_type=model.config.model_type, base_model=model.config.name_or_path or "")
    save_file(adapter_state_dict(model), str(path), metadata=meta)


def load_adapters(model, path):
    """Add adapters to a base model (if it has none) with the saved settings, then load them strictly."""
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    if "bottleneck_size" in meta:  # files written before the setting took the config's name, adapter_size
        meta["adapter_size"] = meta.pop("bottleneck_size")
    if not set(SETTINGS) <= meta.keys():
        raise ValueError(f"{path} has no adapter settings in its metadata; was it written by save_adapters?")
    base = model.config.name_or_path
    if meta["base_model"] and base and meta["base_model"] != base:
        warnings.warn(f"adapters were trained on {meta['base_model']!r}, loading onto {base!r}")
    if not has_adapters(model):
        add_adapters(model, **{k: json.loads(meta[k]) for k in SETTINGS})
    expected = set(adapter_state_dict(model))
    missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"adapter file {path} does not match the model: missing {missing[:5]} "
                         f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
    model.load_state_dict(tensors, strict=False)  # strict=False: the frozen base is not in the file
    return model
