"""What the estimator knows without downloading anything: shipped model configs, precision schemes,
optimizers, GPU sizes, and how a config becomes a trainable model class.

Units: GB means 10^9 bytes everywhere (the report's 3e9 parameters x 2 bytes = 6 GB). GPU cards are
sold in GiB (2^30 bytes), so a "24 GB" card holds 24 GiB = 25.8 GB; `GPUS` holds bytes, and figures
label each card with both numbers.
"""
from __future__ import annotations

from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification,
                          PretrainedConfig)

from ..adapters import DEFAULT_ADAPTER_SIZE

GB = 1e9  # the report counts in decimal gigabytes (3e9 parameters x 2 bytes = 6 GB); so do we
# The scheme our trainer (studykit.training: Accelerate's mixed precision) runs for each RunConfig.precision
# on a device with that precision; on CPU a run's "auto" and "fp16" depend on the machine.
TRAINER_SCHEMES = {"auto": "autocast", "bf16": "autocast", "fp16": "autocast", "fp32": "fp32"}
# What is live at the step's peak, by kind (torch's MemTracker categories; master_weights: the fp32 copy of
# the "mixed" scheme; temporaries: short-lived tensors of backward; tensors made inside the optimizer step,
# its temporaries too, count as optimizer_state), plus overhead.
COMPONENTS = ("weights", "gradients", "optimizer_state", "master_weights", "activations", "temporaries", "overhead")

# ---------------------------------------------------------------------------------------------------
# Shipped configurations: the values of each model's config.json on the Hugging Face Hub, typed in
# here so that nothing is downloaded. Only fields that matter for shapes (and a few for fidelity).
# ---------------------------------------------------------------------------------------------------
# google-bert/bert-base-uncased's config.json: the layout three of the models below share.
_BERT_BASE = dict(
    model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0, num_labels=2)

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
    # google-bert/bert-base-uncased, config.json (Task 2's second encoder).
    "bert-base-uncased": _BERT_BASE,
    # allenai/scibert_scivocab_uncased, config.json: BERT-base with its own 31,090-token vocabulary.
    "allenai/scibert_scivocab_uncased": dict(_BERT_BASE, vocab_size=31090),
    # The reference study's two sizes, config.json of the weights the kit fetches (pinned by sha256 in
    # studykit.fetch): sentence-transformers/all-MiniLM-L6-v2 (22 M: BERT's layout, 6 layers of width 384) and
    # all-mpnet-base-v2 (110 M).
    "all-minilm-l6-v2": dict(_BERT_BASE, hidden_size=384, num_hidden_layers=6, intermediate_size=1536),
    "all-mpnet-base-v2": dict(
        model_type="mpnet", vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=514, relative_attention_num_buckets=32, layer_norm_eps=1e-5, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, num_labels=2),
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
    # BERT-large's layer (hidden 1024, 16 heads, 4096 MLP) in 2 layers with a small vocabulary.
    "bert-large-slice": dict(model_type="bert", vocab_size=8192, hidden_size=1024, num_hidden_layers=2,
                             num_attention_heads=16, intermediate_size=4096, hidden_act="gelu",
                             hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                             max_position_embeddings=512, type_vocab_size=2, num_labels=2),
    # GPT-2's layout (Conv1D projections, fused QKV, dropout 0.1) at 3 layers of width 256.
    "gpt2-mini": dict(model_type="gpt2", vocab_size=4096, n_positions=1024, n_embd=256, n_layer=3, n_head=4,
                      bos_token_id=0, eos_token_id=0),
    # DistilBERT's layout (q_lin/k_lin/v_lin, no token types) at 3 layers of width 256.
    "distilbert-mini": dict(model_type="distilbert", vocab_size=4096, dim=256, n_layers=3, n_heads=4,
                            hidden_dim=1024, max_position_embeddings=512, num_labels=2, pad_token_id=0),
    # T5 (encoder-decoder, relative position bias, RMS-style norm, no biases), 2 + 2 layers of width 256.
    "t5-mini": dict(model_type="t5", vocab_size=4096, d_model=256, d_kv=32, d_ff=1024, num_layers=2,
                    num_decoder_layers=2, num_heads=8, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0),
    # ModernBERT's layout (fused Wqkv, gated MLP, alternating local/global attention, unpadding) at 3 layers of
    # width 256: its forward reads tensor values, so it is measured on real tensors (timeline.py).
    "modernbert-mini": dict(model_type="modernbert", vocab_size=4096, hidden_size=256, intermediate_size=384,
                            num_hidden_layers=3, num_attention_heads=4, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2, cls_token_id=1, sep_token_id=2, num_labels=2),
    # MPNet's layout (q/k/v named q, k, v; relative position bias) at 3 layers of width 256.
    "mpnet-mini": dict(model_type="mpnet", vocab_size=4096, hidden_size=256, num_hidden_layers=3,
                       num_attention_heads=4, intermediate_size=1024, max_position_embeddings=514,
                       pad_token_id=1, num_labels=2),
    # BART (encoder-decoder with learned positions, GeLU, dropout 0.1), 2 + 2 layers of width 256.
    "bart-mini": dict(model_type="bart", vocab_size=4096, d_model=256, encoder_layers=2, decoder_layers=2,
                      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=1024,
                      decoder_ffn_dim=1024, max_position_embeddings=512, pad_token_id=1, bos_token_id=0,
                      eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2),
    # Qwen2 with grouped-query attention (8 query heads, 2 KV heads), QKV biases, 3 layers.
    "qwen2-mini": dict(model_type="qwen2", vocab_size=4096, hidden_size=256, intermediate_size=704,
                       num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2, hidden_act="silu",
                       max_position_embeddings=2048, tie_word_embeddings=True, use_sliding_window=False),
}

# Encoders are built with a sequence-classification head (Tasks 2 and 3); config.is_encoder_decoder
# models as sequence-to-sequence LMs; everything else as a causal LM.
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "albert",
                 "deberta", "deberta-v2", "mpnet", "modernbert")
# Architectures whose layer the closed-form count (formula.py) knows; the traced count covers all.
FORMULA_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "llama", "qwen2", "mistral", "stablelm")

# ---------------------------------------------------------------------------------------------------
# Precision schemes (bytes per parameter) and optimizers.
# ---------------------------------------------------------------------------------------------------
SCHEMES = {
    "fp32": dict(weights=4, gradients=4, master_weights=0, state=4, activations=4,
                 label="fp32 everywhere (4 + 4 + 8 = 16 B/param with AdamW, no master copy)"),
    # ZeRO paper (Rajbhandari et al. 2020, Sec. 3.1): fp16 parameters 2 B + fp16 gradients 2 B +
    # K = 12 B of fp32 optimizer state (master weights 4, momentum 4, variance 4) = 16 B/param.
    "mixed": dict(weights=2, gradients=2, master_weights=4, state=4, activations=2,
                  label="mixed precision, 16-bit grads + fp32 master (ZeRO: 2+2+4+8 = 16 B/param)"),
    # What Accelerate's mixed_precision="bf16"/"fp16" and torch.amp do (our trainer): fp32 weights,
    # fp32 gradients and fp32 AdamW state (4 + 4 + 8 = 16 B/param), no separate master copy; the
    # 16-bit copies of the weights that autocast makes for each matmul are kept for backward where
    # needed, so they are counted (by the traced count) among the activations.
    "autocast": dict(weights=4, gradients=4, master_weights=0, state=4, activations=2,
                     label="autocast (our trainer): fp32 weights, grads and AdamW + 16-bit copies on the fly"),
    # Everything 16-bit, optimizer moments too: the report's accounting (2 + 2 + 4 = 8 B/param).
    "bf16": dict(weights=2, gradients=2, master_weights=0, state=2, activations=2,
                 label="pure bf16: weights, grads and optimizer state 16-bit (2+2+4 = 8 B/param)"),
}
OPTIMIZERS = {
    # torch's AdamW: on CUDA its default multi-tensor (foreach) update makes temporaries as large as the
    # trainable parameters during the step; the fused kernel (our trainer: studykit.training) makes none.
    "adamw": "AdamW (torch default): two moments per trainable parameter",
    "adamw_fused": "AdamW, fused kernel (our trainer): two moments, no temporaries",
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
# the logits), taken as a fraction of everything else.
CUDA_CONTEXT_BYTES = int(0.5e9)
ALLOCATOR_FRACTION = 0.10

DEFAULT_ASSUMPTIONS = dict(
    scheme="autocast", optimizer="adamw", batch_size=4, seq_len=512, checkpointing=False,
    memory_efficient_attention=True, method=None, peft=None, peft_fraction=None, lora_rank=16, lora_targets=None,
    adapter_size=DEFAULT_ADAPTER_SIZE, zero_stage=0, num_gpus=1, device="cuda", overhead=True, activations=None,
    attn_implementation=None, grad_clip=False)
PRESETS = {
    # The report: fp16 weights 2 B + fp16 grads 2 B + Adam 4 B per parameter, activations guessed as
    # large as the weights, nothing for overhead; PEFT adds its trainable parameters to the frozen model.
    "report": dict(scheme="bf16", optimizer="adamw", activations="weights", overhead=False),
    "standard": {},
}

# GPU sizes in bytes. Cards are sold in GiB ("24 GB" = 24 GiB = 25.8 GB); figures draw them in GB.
GPUS = {"8 GB laptop": 8 * 2**30, "24 GB (RTX 3090/4090)": 24 * 2**30,
        "40 GB (A100 40GB)": 40 * 2**30, "80 GB (A100/H100 80GB)": 80 * 2**30}


# ---------------------------------------------------------------------------------------------------
# Models: configs, meta-device builds, architecture, exact parameter counts.
# ---------------------------------------------------------------------------------------------------
def get_config(model):
    """A transformers config from a shipped name (`MODEL_CONFIGS`, `VALIDATION_CONFIGS`) or a config."""
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


def is_encoder(config):
    """True for the encoders we train with a classification head (`ENCODER_TYPES`)."""
    return config.model_type in ENCODER_TYPES


def model_class(config):
    """The Auto class we train this config as: classifier (encoders), seq2seq LM, or causal LM."""
    if is_encoder(config):
        return AutoModelForSequenceClassification
    if getattr(config, "is_encoder_decoder", False):
        return AutoModelForSeq2SeqLM
    return AutoModelForCausalLM


def default_attention(config) -> str:
    """The attention our trainer runs for this model, transformers' default (the engine asks for none): sdpa
    where the model has it, else eager (MPNet's own attention code)."""
    concrete = model_class(config)._model_mapping.get(type(config), None)  # the Auto class's pick
    return "eager" if concrete is not None and not getattr(concrete, "_supports_sdpa", True) else "sdpa"
