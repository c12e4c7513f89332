"""The closed-form activation count, term by term (what the notebook teaches; the traced count checks it).

Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
(arXiv:2205.05198, Sec. 4.1): s·b·h·(34 + 5·a·s/h) bytes per GPT layer, adapted here to GQA, gated
MLPs, RMSNorm and frozen weights, for the layer families in `FORMULA_TYPES`.
"""
from __future__ import annotations

from .catalog import ALL_ROLES, PRECISIONS
from .counting import Architecture, _stats, architecture

__all__ = ["activation_terms", "korthikanti_layer_bytes"]


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
    a: Architecture = st["arch"] or architecture(model)  # raises, naming the families it knows
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

