"""Loading a saved model folder: which of the two layouts it has, and reading either.

- LUSIFER's own layout (``LusiferModel.save_pretrained``): ``lusifer_config.json`` (the
  :class:`~lusifer.config.LusiferConfig` and format version) and ``model.safetensors`` with
  only the trained tensors (connector, head, LoRA); the backbones are referenced (or saved
  merged under ``encoder/`` and ``target/``).
- The reference implementation's published layout (``Hieuman/LUSIFER``), below.

:func:`load_model_folder` resolves a folder or hub id, tells the layouts apart
(:func:`folder_layout`) and builds the model from either. It takes the model class as
an argument (``LusiferModel.from_pretrained`` passes its class), so this module does not
import the model module, which imports it.

The reference layout is a ``config.json`` holding the reference model's constructor
arguments and one ``model.safetensors`` with the whole module's state dict (saved through
``PyTorchModelHubMixin``):

- ``universal_learner.*``: the multilingual encoder, peft-wrapped with the adapter
  ``universal_learner_lora_name`` (``base_model.model.<name>``; LoRA-wrapped Linear layers
  as ``<module>.base_layer.weight`` + ``<module>.lora_A.<adapter>.weight`` ...);
- ``encoder.*``: the target LLM (a ``*ForCausalLM``), peft-wrapped likewise with
  ``encoder_lora_name``;
- ``connection_module.ff.{0,2}.*`` and ``connection_module.added_tokens`` (N > 0);
- ``output_projection.{0,2}.*``: the projection head.

Both backbones' base weights are in the file, so only their configs and tokenizers are
read from the backbone references (hub ids in the published config; pass local folders
through ``encoder=``/``target=``). LoRA stays a (peft) adapter, or is merged on request.

Difference from the reference forward: with ``num_added_tokens > 0`` the reference
appends the learned tokens after the padded batch; LUSIFER places them right after each
row's last real token. Both agree for unpadded rows (e.g. one text at a time).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ..backbones import Backbone, is_decoder_config, load_backbone, load_config_and_tokenizer
from ..config import ConfigError, LoraSettings, LusiferConfig, from_dict
from .lora import load_lora_state_dict, merge_lora
from .target import unwrap

CONFIG_NAME = "lusifer_config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
REFERENCE_CONFIG = "config.json"
REFERENCE_WEIGHTS = "model.safetensors"

Layout = Literal["lusifer", "reference"]
ModelT = TypeVar("ModelT", bound=nn.Module)


class ModelFolderError(ValueError):
    """A saved model does not fit: another backbone, missing or extra tensors."""


def backbone_signature(model: nn.Module) -> dict[str, Any]:
    """Facts about a backbone that a model trained on it depends on."""
    config = unwrap(model).config
    keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")
    return {k: getattr(config, k, None) for k in keys}


def is_reference_checkpoint(path: str | Path) -> bool:
    """True for a folder in the reference code's layout (its ``config.json`` names a
    ``universal_learner_name_or_path``)."""
    return _is_reference_config(Path(path) / REFERENCE_CONFIG)


def _is_reference_config(config: Path) -> bool:
    if not config.is_file():
        return False
    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and "universal_learner_name_or_path" in raw


def folder_layout(path: str | Path) -> Layout | None:
    """``"lusifer"`` for a folder saved by ``save_pretrained``, ``"reference"`` for one in
    the reference code's published layout, None for anything else."""
    if (Path(path) / CONFIG_NAME).is_file():
        return "lusifer"
    if is_reference_checkpoint(Path(path)):
        return "reference"
    return None


def is_lusifer_folder(path: str | Path) -> bool:
    """A folder saved by ``save_pretrained``, or in the reference code's published layout;
    or a hub repo id holding either (:func:`hub_folder_layout`)."""
    if folder_layout(path) is not None:
        return True
    return looks_like_repo_id(path) and hub_folder_layout(str(path)) is not None


def looks_like_repo_id(reference: str | Path) -> bool:
    """``owner/name`` given as a string that is not an existing local path: what
    :func:`resolve_model_folder` looks up on the hub."""
    return (
        isinstance(reference, str)
        and reference.count("/") == 1
        and not reference.startswith((".", "/", "~"))
        and not Path(reference).exists()
    )


def hub_folder_layout(repo_id: str) -> Layout | None:
    """The layout of a hub repo: ``"lusifer"`` when it holds ``lusifer_config.json`` (what
    ``save_pretrained``/``push_to_hub`` write), ``"reference"`` when its ``config.json``
    names a ``universal_learner_name_or_path``, None otherwise (a plain backbone, or a repo
    that cannot be found or reached: it is then loaded as a backbone, as before).

    Only the config files are fetched, through ``hf_hub_download``, so the local Hugging
    Face cache answers first and ``HF_HUB_OFFLINE=1`` is respected (a repo not in the
    cache then reads as None)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    for name in (CONFIG_NAME, REFERENCE_CONFIG):
        try:
            path = Path(hf_hub_download(repo_id, name))
        except (RepositoryNotFoundError, RevisionNotFoundError):
            return None  # no such repo (or no access): nothing else to ask
        except (EntryNotFoundError, OSError, ValueError):  # no such file, offline, bad id
            continue
        if name == CONFIG_NAME:
            return "lusifer"
        if _is_reference_config(path):
            return "reference"
    return None


def load_model_folder(
    model_class: type[ModelT],
    directory: str | Path,
    *,
    device: str | torch.device | None = None,
) -> ModelT:
    """Load a model folder (or hub repo id) in either layout as a ``model_class``."""
    directory = resolve_model_folder(directory)
    if folder_layout(directory) != "lusifer":  # the reference code's published layout
        return load_reference_layout(model_class, directory, device=device)
    return load_lusifer_layout(model_class, directory, device=device)


def load_lusifer_layout(
    model_class: type[ModelT],
    directory: Path,
    *,
    device: str | torch.device | None = None,
) -> ModelT:
    """A ``model_class`` from a folder saved by ``save_pretrained``."""
    meta = json.loads((directory / CONFIG_NAME).read_text())
    if meta.get("format") != "lusifer":
        raise ModelFolderError(f"{directory / CONFIG_NAME} is not a LUSIFER config")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFolderError(
            f"{directory} was saved by a newer lusifer (format {meta['format_version']}); upgrade"
        )
    raw = dict(meta["config"])
    for key in ("encoder", "target"):  # merged saves point inside the folder
        if isinstance(raw.get(key), str) and raw[key].startswith("./"):
            raw[key] = str(directory / raw[key][2:])
    config = from_dict(LusiferConfig, raw)
    # a LusiferModel, which this module does not import (it imports this module)
    model: Any = model_class(config, load_backbone(config.encoder), load_backbone(config.target))
    for part, module in (("encoder", model.encoder), ("target", model.target.model)):
        saved = getattr(config, f"{part}_signature")
        found = backbone_signature(module)
        if saved and saved != found:
            raise ModelFolderError(
                f"{directory} was trained on a different {part} backbone: saved {saved}, "
                f"but {getattr(config, part)!r} resolves to {found}"
            )
    state = load_file(str(directory / WEIGHTS_NAME))
    model.load_trained_state_dict(state, source=str(directory))
    model.freeze(connector=False, head=False, encoder_lora=False, target_lora=False)
    if device is not None:
        model.to(device)
    return model.eval()


def resolve_model_folder(reference: str | Path) -> Path:
    """A local folder for ``reference``: the folder itself, or a hub repo id's download
    (its LUSIFER config and weights, and the reference layout's ``config.json``)."""
    path = Path(reference).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            if is_reference_checkpoint(path):
                return path
            raise ModelFolderError(
                f"{path} has no {CONFIG_NAME}: not a LUSIFER model folder "
                "(use lusifer.load_embedder for plain embedders)"
            )
        return path
    if looks_like_repo_id(reference):
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                str(reference),
                # merged saves keep both backbones under encoder/ and target/
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "config.json", "encoder/*", "target/*"],
            )
        )
    raise ModelFolderError(f"no LUSIFER model at {reference!r}")


# --------------------------------------------------------------------------- reference layout

_POOLING = {"mean": "mean", "cls": "cls", "lasttoken": "last"}
# Constructor arguments of the reference model that do not change the computation here.
_IGNORED_KEYS = {
    "universal_learner_backbone_type",
    "encoder_backbone_type",
    "is_freeze_universal_learner",
    "is_freeze_encoder",
    "encoder_lora_target_modules",
    "universal_learner_lora_target_modules",
    "attn_implementation",
    "model_dtype",
}
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.(?P<adapter>[^.]+)\.weight$")


def reference_config(raw: dict[str, Any], *, source: str = "") -> LusiferConfig:
    """Map the reference constructor arguments onto :class:`LusiferConfig` (LoRA target
    modules are filled in later from the weights)."""
    known = {
        "universal_learner_name_or_path",
        "encoder_name_or_path",
        "connection_type",
        "num_added_tokens",
        "pooling_method",
        "encoder_lora_name",
        "universal_learner_lora_name",
        "loar_r",  # sic: the reference's spelling
        "lora_r",
        "lora_alpha",
        "dropout",
    }
    unknown = sorted(set(raw) - known - _IGNORED_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown reference config key(s) {unknown}")
    connection = raw.get("connection_type", "ff")
    if connection != "ff":
        raise ConfigError(
            f"{source}: connection_type {connection!r} is not supported (only 'ff', the "
            "paper's per-token MLP)"
        )
    pooling = raw.get("pooling_method", "mean")
    if pooling not in _POOLING:
        raise ConfigError(
            f"{source}: pooling_method {pooling!r} is not supported; use one of {list(_POOLING)}"
        )

    def lora() -> LoraSettings:
        return LoraSettings(
            r=int(raw.get("loar_r", raw.get("lora_r", 16))),
            alpha=int(raw.get("lora_alpha", 32)),
            dropout=float(raw.get("dropout", 0.1)),
        )

    return LusiferConfig(
        encoder=raw["universal_learner_name_or_path"],
        target=raw["encoder_name_or_path"],
        num_learned_tokens=int(raw.get("num_added_tokens", 0)),
        pooling=_POOLING[pooling],  # type: ignore[arg-type]
        projection_head=True,
        connector_activation="relu",
        encoder_lora=lora()
        if raw.get("universal_learner_lora_name", "universal_learner_lora")
        else None,
        target_lora=lora() if raw.get("encoder_lora_name", "encoder_lora") else None,
    )


def _split_backbone_state(
    state: dict[str, torch.Tensor], prefix: str, adapter: str | None, *, source: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """One backbone's tensors -> (base weights, LoRA weights in peft's saved-key form,
    LoRA-wrapped module names)."""
    base: dict[str, torch.Tensor] = {}
    lora: dict[str, torch.Tensor] = {}
    modules: set[str] = set()
    inner = f"{prefix}.base_model.model." if adapter else f"{prefix}."
    for key, tensor in state.items():
        if not key.startswith(inner):
            if key.startswith(f"{prefix}."):
                raise ModelFolderError(
                    f"{source}: tensor {key} does not fit the expected layout {inner}* "
                    f"(adapter {adapter!r})"
                )
            continue
        name = key[len(inner) :]
        match = _LORA_KEY.match(name)
        if match:
            if match["adapter"] != adapter:
                raise ModelFolderError(
                    f"{source}: tensor {key} belongs to adapter {match['adapter']!r}, the "
                    f"config names {adapter!r}"
                )
            modules.add(match["module"])
            lora[f"base_model.model.{match['module']}.{match['kind']}.weight"] = tensor
        else:
            base[name.replace(".base_layer.", ".")] = tensor
    return base, lora, sorted(modules)


def _backbone_from_weights(
    reference: str, weights: dict[str, torch.Tensor], *, source: str
) -> Backbone:
    """Build a backbone from its config and tokenizer, with the file's base weights."""
    from accelerate import init_empty_weights
    from transformers import AutoModel, AutoModelForCausalLM

    path, config, tokenizer = load_config_and_tokenizer(
        reference,
        what=f"{source} needs the config and tokenizer of backbone",
        hint="Pass a local folder with encoder=/target= (the weights come from the model folder).",
    )
    decoder = is_decoder_config(config)
    with init_empty_weights():
        if decoder:
            model = AutoModelForCausalLM.from_config(config)
        else:
            try:
                model = AutoModel.from_config(config, add_pooling_layer=False)
            except TypeError:
                model = AutoModel.from_config(config)
    expected = model.state_dict()
    weights = {k: v for k, v in weights.items() if k in expected}  # e.g. the unused pooler
    _restore_tied(model, weights)
    result = model.load_state_dict(weights, strict=False, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    still_empty = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if still_empty:
        raise ModelFolderError(
            f"{source}: backbone {reference!r} weights missing from the model folder: "
            f"{still_empty[:5]} (missing keys {result.missing_keys[:5]})"
        )
    for name, buf in list(model.named_buffers()):  # non-persistent buffers (rotary, ids)
        if buf.device.type == "meta":
            raise ModelFolderError(f"{source}: buffer {name} of {reference!r} was not restored")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return Backbone(reference, path, model.eval(), tokenizer, decoder)


def _restore_tied(model, weights: dict[str, torch.Tensor]) -> None:
    """safetensors stores a tied input/output embedding once, under either name."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is None:
        return
    names = {id(m): n for n, m in model.named_modules()}
    a = f"{names[id(model.get_input_embeddings())]}.weight"
    b = f"{names[id(out)]}.weight"
    if a not in weights and b in weights:
        weights[a] = weights[b]
    elif b not in weights and a in weights:
        weights[b] = weights[a]


def load_reference_layout(
    model_class: type[ModelT],
    directory: str | Path,
    *,
    encoder: str | None = None,
    target: str | None = None,
    merge: bool = False,
    device: str | torch.device | None = None,
) -> ModelT:
    """A ``model_class`` (:class:`~lusifer.model.LusiferModel`) from a folder in the
    reference layout.

    ``encoder``/``target`` override the backbone references of its config (for their
    configs and tokenizers only). ``merge=True`` folds LoRA into the base weights.
    """
    directory = Path(directory)
    source = str(directory)
    raw = json.loads((directory / REFERENCE_CONFIG).read_text())
    config = reference_config(raw, source=str(directory / REFERENCE_CONFIG))
    if encoder:
        config.encoder = encoder
    if target:
        config.target = target
    weights_file = directory / REFERENCE_WEIGHTS
    if not weights_file.is_file():
        raise ModelFolderError(f"{directory} has no {REFERENCE_WEIGHTS}")
    with safe_open(str(weights_file), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    enc_adapter = raw.get("universal_learner_lora_name", "universal_learner_lora")
    tgt_adapter = raw.get("encoder_lora_name", "encoder_lora")
    enc_base, enc_lora, enc_modules = _split_backbone_state(
        state, "universal_learner", enc_adapter, source=source
    )
    tgt_base, tgt_lora, tgt_modules = _split_backbone_state(
        state, "encoder", tgt_adapter, source=source
    )
    # LoRA on modules LUSIFER does not run (the encoder's pooler) is dropped.
    enc_modules = [m for m in enc_modules if not m.startswith("pooler.")]
    enc_lora = {k: v for k, v in enc_lora.items() if not k.startswith("base_model.model.pooler.")}
    if config.encoder_lora is not None:
        config.encoder_lora.target_modules = enc_modules
    if config.target_lora is not None:
        config.target_lora.target_modules = tgt_modules
    if config.encoder_lora is not None and not enc_modules:
        config.encoder_lora = None
    if config.target_lora is not None and not tgt_modules:
        config.target_lora = None
    model: Any = model_class(  # a LusiferModel, as above
        config,
        _backbone_from_weights(config.encoder, enc_base, source=source),
        _backbone_from_weights(config.target, tgt_base, source=source),
    )
    model.config.encoder_signature = backbone_signature(model.encoder)
    model.config.target_signature = backbone_signature(model.target.model)
    _load_small_parts(model, state, source=source)
    if config.encoder_lora is not None:
        load_lora_state_dict(model.encoder, enc_lora)
    if config.target_lora is not None:
        load_lora_state_dict(model.target.model, tgt_lora)
    if merge:
        model.encoder = merge_lora(model.encoder)
        model.target.model = merge_lora(model.target.model)
        model.config.encoder_lora = None
        model.config.target_lora = None
    model.freeze(connector=False, head=False, encoder_lora=False, target_lora=False)
    if device is not None:
        model.to(device)
    return model.eval()


def _load_small_parts(model: Any, state: dict[str, torch.Tensor], *, source: str) -> None:
    connector = {
        k.removeprefix("connection_module."): v
        for k, v in state.items()
        if k.startswith("connection_module.")
    }
    if "added_tokens" in connector:
        connector["learned_tokens"] = connector.pop("added_tokens")
    head = {
        f"net.{k.removeprefix('output_projection.')}": v
        for k, v in state.items()
        if k.startswith("output_projection.")
    }
    for name, module, part in (
        ("connection_module", model.connector, connector),
        ("output_projection", model.head, head),
    ):
        try:
            module.load_state_dict(part)
        except RuntimeError as err:
            raise ModelFolderError(f"{source}: {name}.* does not fit: {err}") from None
    leftover = sorted(
        k
        for k in state
        if not k.startswith(
            ("universal_learner.", "encoder.", "connection_module.", "output_projection.")
        )
    )
    if leftover:
        raise ModelFolderError(f"{source}: unexpected tensors {leftover[:5]}")
