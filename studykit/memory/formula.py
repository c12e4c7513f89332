"""The closed-form activation count of full fine-tuning, term by term (what the notebook teaches; the estimate
itself is the step's timeline, timeline.py).

Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
(arXiv:2205.05198, Sec. 4.1): s·b·h·(34 + 5·a·s/h) bytes per GPT layer, adapted here to GQA, gated
MLPs, RMSNorm and frozen weights, for the layer families in `FORMULA_TYPES`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .counting import Architecture, architecture
from .estimate import scheme_bytes

__all__ = ["activation_terms", "korthikanti_layer_bytes", "activation_bytes"]

ALL_ROLES = frozenset({"q", "k", "v", "o", "up", "down"})
# Full fine-tuning: every Linear and norm trains, nothing is added.
FULL = dict(roles=ALL_ROLES, norms_trainable=True, adapter_size=0, lora_rank=0, lora_per_layer=0)


def activation_terms(model, batch_size=4, seq_len=512, scheme="bf16", memory_efficient_attention=True,
                     device="cuda"):
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
    - outside the layers: the embedding LayerNorm and dropout (BERT-style), BERT's pooler input (a view
      that keeps the whole last hidden state), the final norm, the output layer's input, and the fp32
      log-softmax of the logits (s·b·vocab·4 bytes).
    """
    st = FULL
    a: Architecture = architecture(model)  # raises, naming the families it knows
    act = scheme_bytes(scheme)["activations"]
    c = _Counting(a, st, act, mask=1 if device == "cuda" else act, T=batch_size * seq_len, seq=seq_len,
                  flash=memory_efficient_attention)
    per_layer = c.layer(grad_from_below=True)
    other = c.outside(batch_size)
    if st["roles"] != ALL_ROLES:  # PEFT: embeddings frozen, so no gradient flows into the first layer
        first = sum(b for _, b in c.layer(grad_from_below=False)) - sum(b for _, b in per_layer)
        if first:
            other.append(("first layer: inputs with no gradient from below not kept", first))
    return dict(per_layer=per_layer, other=other, layers=a.layers, layer_input=a.hidden * c.T * act, arch=a)


@dataclass
class _Counting:
    """The closed-form count for one layer shape, one component per method: (term, bytes) lists."""
    a: Architecture
    st: dict
    act: int      # bytes per activation value
    mask: int     # bytes per dropout-mask value (1 on CUDA, a full value on CPU)
    T: int        # tokens in the batch
    seq: int
    flash: bool   # memory-efficient attention (no s² term)

    def layer(self, grad_from_below):
        """One layer's kept tensors; grad_from_below=False for the first layer over frozen embeddings."""
        roles = self.st["roles"]
        # which of Q, K, V need a gradient: all, unless nothing below (nor the norm) is trained
        req = {"q", "k", "v"} if grad_from_below or self.st["norms_trainable"] else roles & {"q", "k", "v"}
        terms = self.norms(grad_from_below)
        terms += self.attention(req, roles)
        terms += self.mlp(roles)
        terms += self.peft()
        return [(name, int(b)) for name, b, when in terms if when and b]

    def norms(self, grad_from_below):
        a, T, trained = self.a, self.T, self.st["norms_trainable"]
        norm_in = 4 if a.norm == "rmsnorm" else self.act  # HF's RMSNorm keeps an fp32 copy of its input
        # pre-norm decoders: the attention norm reads the layer input; it keeps it only if a gradient is
        # wanted for it (RMSNorm) or for its weight (LayerNorm). Post-norm encoders read the embedding LN.
        norm1_kept = grad_from_below or (a.norm == "layernorm" and trained) or not a.causal
        return [("norm inputs (2)", (1 + norm1_kept) * a.hidden * T * norm_in, True),
                ("RMSNorm outputs (2, trained weight)", 2 * a.hidden * T * self.act, a.norm == "rmsnorm" and trained)]

    def attention(self, req, roles):
        a, T, act = self.a, self.T, self.act
        qd, kvd = a.heads * a.head_dim, a.kv_heads * a.head_dim
        terms = [("Q/K/V input", a.hidden * T * act, bool(roles & {"q", "k", "v"}))]
        if self.flash:
            terms += [("Q", qd * T * act, bool(req)), ("K, V (KV heads)", 2 * kvd * T * act, bool(req)),
                      ("attention output (= projection input)", qd * T * act, bool(req)),
                      ("softmax log-sum-exp (fp32)", a.heads * T * 4, bool(req))]
        else:
            scores = bool(req & {"q", "k"})  # Q·Kᵀ keeps Q for K's gradient and K for Q's
            n = ("k" in req) + ("q" in req) + scores
            s2 = a.heads * self.seq * T
            upcast = a.causal  # HF's eager decoders: softmax(..., dtype=float32).to(query.dtype)
            terms += [("Q, K, V (K, V repeated to all heads)", n * qd * T * act, True),
                      ("softmax output" + (" (fp32)" if upcast and act < 4 else ""), s2 * (4 if upcast else act),
                       scores)]
            if a.attention_dropout > 0:
                terms += [("attention dropout mask", s2 * self.mask, scores),
                          ("attention dropout output", s2 * act, "v" in req)]
            elif upcast and act < 4:
                terms.append(("softmax output cast to 16 bit", s2 * act, "v" in req))
            terms.append(("projection input", qd * T * act, "o" in roles))
        return terms + [("dropout masks (2)", 2 * a.hidden * T * self.mask, a.hidden_dropout > 0)]

    def mlp(self, roles):
        a, T, act = self.a, self.T, self.act
        terms = [("MLP input", a.hidden * T * act, "up" in roles)]
        if a.gated:  # SwiGLU: gate, activation output, up (the product is the down-projection input)
            terms.append(("gate, activation output, up (3 x intermediate)", 3 * a.intermediate * T * act, True))
        else:
            terms.append(("activation input (intermediate)", a.intermediate * T * act, True))
        return terms + [("down-projection input (intermediate)", a.intermediate * T * act, "down" in roles)]

    def peft(self):
        st, T, act = self.st, self.T, self.act
        m = st["adapter_size"]
        return [("adapters (2): input + bottleneck act. input/output", 2 * (self.a.hidden + 2 * m) * T * act, bool(m)),
                ("LoRA A outputs (r per targeted Linear)", st["lora_per_layer"] * st["lora_rank"] * T * act,
                 bool(st["lora_rank"]))]

    def outside(self, batch_size):
        """Outside the layers: embedding norm and dropout or final norm, output layer, logits, head."""
        a, T, act, st = self.a, self.T, self.act, self.st
        h, trained = a.hidden, st["norms_trainable"]
        if not a.causal:
            terms = [("embedding LayerNorm input", h * T * act, trained),
                     ("embedding dropout mask", h * T * self.mask, trained and a.hidden_dropout > 0),
                     # BERT's trained pooler keeps its input, hidden[:, 0]: a view, so the whole last
                     # hidden state stays alive (RoBERTa's head drops out a copy first)
                     ("pooler input (a view: keeps the last hidden state)", h * T * act,
                      a.model_type == "bert" and st["roles"] == ALL_ROLES and trained),
                     ("classification head", 4 * h * batch_size * act, True)]
        else:
            terms = [("final norm input", h * T * (4 if a.norm == "rmsnorm" else act), True),
                     ("final RMSNorm output", h * T * act, a.norm == "rmsnorm" and trained),
                     ("output layer input", h * T * act, st["roles"] == ALL_ROLES and trained),
                     ("log-softmax of the logits (fp32)", a.vocab * T * 4, True)]
        return [(name, b) for name, b, when in terms if when]


def korthikanti_layer_bytes(model, batch_size, seq_len):
    """Korthikanti et al.'s bytes per GPT layer, s·b·h·(34 + 5·a·s/h), for this model's h and a."""
    a = architecture(model)
    return seq_len * batch_size * a.hidden * (34 + 5 * a.heads * seq_len / a.hidden)


def activation_bytes(terms, checkpointing=False):
    """The activations the closed form counts for the whole model (with full recomputation if checkpointing)."""
    layer = sum(b for _, b in terms["per_layer"])
    other = sum(b for _, b in terms["other"])
    if checkpointing:
        # Full recomputation (Korthikanti's 2sbhL): keep each layer's input; during backward one layer's
        # activations are rebuilt and live at once.
        return terms["layers"] * terms["layer_input"] + layer + other
    return terms["layers"] * layer + other

