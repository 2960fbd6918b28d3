"""``LusiferModel``: multilingual encoder -> connector -> target model -> pooling -> head."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import BatchEncoding

from ..backbones import Backbone, load_backbone
from ..config import ConfigError, LusiferConfig, from_dict
from ..files import atomic_folder
from ..types import UploadOptions
from .connector import Connector
from .embedder import TorchEmbedder, sampled_digest
from .head import ProjectionHead
from .loading import (
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    ModelFolderError,
    backbone_signature,
    is_lusifer_folder,
    load_model_folder,
)
from .lora import (
    AdaptableModel,
    add_lora,
    has_lora,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
)
from .pooling import pool, pooling_mask
from .prompts import PromptProcessor
from .router import LanguageRouter
from .routing import NativeRoute, complete_route_settings
from .target import TargetModel, unwrap

# (input_ids, attention_mask) -> the encoder's token states
EncoderStates = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "ModelFolderError",
    "LusiferModel",
    "backbone_signature",
    "is_lusifer_folder",
]


class LusiferModel(TorchEmbedder, nn.Module):
    """A LUSIFER embedder. Build with :meth:`build`, reload with :meth:`from_pretrained`;
    embed with ``encode`` (:meth:`Embedder.encode`: pre-head vectors unless ``use_head``)."""

    own_route = "connector"

    def __init__(self, config: LusiferConfig, encoder: Backbone, target: Backbone) -> None:
        super().__init__()
        if encoder.is_decoder:
            raise ConfigError(
                f"encoder {config.encoder!r} is a causal LM; the multilingual encoder must be "
                "a bidirectional encoder such as XLM-R or multilingual-e5"
            )
        self.config = config
        self.encoder: AdaptableModel = encoder.model
        self.processor = PromptProcessor(encoder.tokenizer, config)
        self.target = TargetModel(target)
        enc_size = unwrap(self.encoder).config.hidden_size
        self.connector = Connector(
            enc_size,
            self.target.input_embeddings().embedding_dim,
            hidden_size=config.connector_hidden_size,
            activation=config.connector_activation,
            num_learned_tokens=config.num_learned_tokens,
            centering=config.connector_centering,
        )
        self.head = ProjectionHead(self.target.hidden_size) if config.projection_head else None
        if config.encoder_lora is not None:
            self.encoder = add_lora(self.encoder, config.encoder_lora)
        if config.target_lora is not None:
            self.target.model = add_lora(self.target.model, config.target_lora)
        self.name = f"lusifer[{config.encoder} -> {config.target}]"
        if config.routes is not None:
            config.routes = complete_route_settings(config.routes, target, config.pooling)
        self._router: LanguageRouter | None = None
        # Set by merge_and_unload: LoRA lives in the backbones' weights, for inference only.
        self.lora_merged = False
        self._adapter_fingerprint: str | None = None

    # ----------------------------------------------------------------- building
    @classmethod
    def build(cls, config: LusiferConfig | dict[str, Any] | None = None, **kwargs) -> LusiferModel:
        """A fresh model (untrained connector) from a config, a dict or keyword arguments."""
        if config is None:
            config = from_dict(LusiferConfig, kwargs)
        elif isinstance(config, dict):
            config = from_dict(LusiferConfig, {**config, **kwargs})
        encoder = load_backbone(config.encoder)
        target = load_backbone(config.target)
        model = cls(config, encoder, target)
        model.config.encoder_signature = backbone_signature(model.encoder)
        model.config.target_signature = backbone_signature(model.target.model)
        model.connector.match_output_scale(
            model.target.input_embeddings().weight, model._sample_encoder_states()
        )
        model.freeze(connector=True, head=True, encoder_lora=True, target_lora=True)
        return model.eval()

    @torch.no_grad()
    def _sample_encoder_states(self) -> torch.Tensor:
        """Encoder token states of a few sentences, to calibrate the connector's scale."""
        sentences = [
            "The quick brown fox jumps over the lazy dog.",
            "Le renard brun saute par-dessus le chien paresseux.",
            "Быстрая лиса прыгает через ленивую собаку.",
            "素早い茶色の狐がのろまな犬を飛び越える。",
        ]
        enc = self.tokenize(sentences, max_length=64).to(self.device)
        states = self.connector_inputs(enc["input_ids"], enc["attention_mask"])
        return states[enc["attention_mask"].bool()]

    def freeze(
        self,
        *,
        connector: bool,
        head: bool,
        encoder_lora: bool,
        target_lora: bool,
    ) -> None:
        """Set which parts train (True) or stay frozen; backbone base weights always stay frozen."""
        if self.lora_merged and (connector or head or encoder_lora or target_lora):
            # its fingerprint is the one from before merging: it must not change any more
            raise RuntimeError(
                "this model's LoRA was merged into its backbones for inference "
                "(merge_and_unload), so it cannot be trained; reload the folder with "
                "LusiferModel.from_pretrained to train it"
            )
        for p in self.parameters():
            p.requires_grad_(False)
        self.connector.requires_grad_(connector)
        if self.head is not None:
            self.head.requires_grad_(head)
        for module, on in ((self.encoder, encoder_lora), (self.target.model, target_lora)):
            for name, p in module.named_parameters():
                if "lora_" in name:
                    p.requires_grad_(on)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def device(self) -> torch.device:
        return next(self.connector.parameters()).device

    @property
    def embedding_size(self) -> int:
        return self.target.hidden_size

    @property
    def routed(self) -> bool:
        """Whether English text takes the native route (``config.routes``)."""
        return self.config.routes is not None

    @property
    def router(self) -> LanguageRouter:
        """The language router of a routed model (built on first use)."""
        if self.config.routes is None:
            raise ValueError("this model is not routed (config.routes is None)")
        if self._router is None:
            self._router = LanguageRouter.from_settings(self.config.routes.router)
        return self._router

    @property
    def native_route(self) -> NativeRoute:
        """The target alone (adapters off, its own prompt, limit and pooling) as a plain
        embedder sharing this model's target weights."""
        if self.config.routes is None:
            raise ValueError("this model is not routed (config.routes is None)")
        return NativeRoute(self.target, self.config.target, self.config.routes)

    # ----------------------------------------------------------------- forward
    def tokenize(self, texts: list[str], **kwargs: Any) -> BatchEncoding:
        """:attr:`processor`: LUSIFER's prompts, tokenized with the encoder's tokenizer
        (the only tokenizer texts see); ``instruction`` and ``kind`` are one for all texts
        or one per text (see :class:`PromptProcessor`)."""
        return self.processor(texts, **kwargs)

    def connector_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_states: EncoderStates | None = None,
    ) -> torch.Tensor:
        """Encoder token states [B, L, d_enc] as the connector's MLP reads them
        (:meth:`Connector.prepare`): what its least-squares start and scale are fitted on.
        ``encoder_states`` (a training stage's frozen-encoder runner) replaces
        :meth:`encoder_states`."""
        states_of = encoder_states or self.encoder_states
        return self.connector.prepare(states_of(input_ids, attention_mask), attention_mask)

    def encoder_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last-layer token states [B, L, d_enc]."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def soft_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states mapped by the connector into the target's input space."""
        return self.connect(self.encoder_states(input_ids, attention_mask), attention_mask)

    def connect(
        self, states: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder token states [B, L, d_enc] -> soft tokens [B, L + N, d_target] in the
        target's dtype, and their mask (learned tokens after each row's text)."""
        embeds, mask = self.connector(states, attention_mask)
        return embeds.to(self.target.input_embeddings().weight.dtype), mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor | None = None,
        *,
        use_head: bool = False,
    ) -> torch.Tensor:
        """Pooled embedding [B, D] (after the head when ``use_head`` and a head exists).

        ``pool_mask`` (from :meth:`tokenize`) leaves instruction tokens out of pooling."""
        states = self.encoder_states(input_ids, attention_mask)
        return self.embed_states(states, attention_mask, pool_mask, use_head=use_head)

    def embed_states(
        self,
        states: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor | None = None,
        *,
        use_head: bool = False,
    ) -> torch.Tensor:
        """:meth:`forward` from the encoder's token states on: connector, target, pooling
        and head (the ONNX graph runs this after the torch encoder)."""
        embeds, mask = self.connect(states, attention_mask)
        hidden = self.target.hidden_states(embeds, mask, causal=False)
        if pool_mask is not None:
            n = self.connector.num_learned_tokens
            mask = pooling_mask(mask, attention_mask, pool_mask, n)
        pooled = pool(hidden, mask, self.config.pooling)
        if use_head and self.head is not None:
            # the head keeps its own (trained, fp32) dtype under a half-precision target
            return self.head(pooled.to(next(self.head.parameters()).dtype))
        return pooled

    def embed_tokens(self, enc: BatchEncoding, *, use_head: bool = False) -> torch.Tensor:
        enc = enc.to(self.device)
        return self(
            enc["input_ids"], enc["attention_mask"], enc.get("pool_mask"), use_head=use_head
        )

    def check_use_head(self, use_head: bool | None, route: str) -> bool:
        if use_head and route != "connector":
            raise ValueError(
                "use_head=True has no native route (the head's space is not the target's)"
            )
        return bool(use_head)

    def native_embedder(self) -> NativeRoute | None:
        return self.native_route if self.routed else None

    # ------------------------------------------------------------- save / load
    def merge_and_unload(self) -> LusiferModel:
        """Fold the LoRA adapters into the backbones' weights, in place, for inference: one
        matmul per adapted linear layer instead of three, about 1.2x faster on CPU
        (``benchmarks/encode_speed.py``), the same embeddings to float32 rounding.

        Only float32 backbones are merged: added into bf16/fp16 weights the small LoRA
        update would be rounded, so a half-precision model keeps its adapters (and this
        returns it unchanged). A merged model keeps its fingerprint, encodes, exports and
        saves with ``save_pretrained(merge=True)``; it can no longer be trained or saved as
        adapters. ``lusifer encode/evaluate/serve`` load models this way."""
        # a routed model's native route runs the target with its adapters off: they stay
        mergeable = [self.encoder] if self.routed else [self.encoder, self.target.model]
        adapted = [m for m in mergeable if has_lora(m)]
        if self.lora_merged or not adapted:
            return self
        if any(p.dtype != torch.float32 for m in adapted for p in m.parameters()):
            return self
        self._adapter_fingerprint = self.fingerprint()
        self.encoder = merge_lora(self.encoder)
        if not self.routed:
            self.target.model = merge_lora(self.target.model)
        self.lora_merged = True
        return self

    def trained_state_dict(self, *, views: bool = False) -> dict[str, torch.Tensor]:
        """Every tensor that training changes (CPU copies; ``views``: the live tensors
        themselves); backbones are referenced, not copied."""
        if self.lora_merged:
            raise RuntimeError(
                "this model's LoRA was merged into its backbones for inference "
                "(merge_and_unload): save it whole with save_pretrained(merge=True), or "
                "reload the folder with LusiferModel.from_pretrained to keep the adapters"
            )
        state = {f"connector.{k}": v for k, v in self.connector.state_dict().items()}
        if self.head is not None:
            state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        if self.config.encoder_lora is not None:
            state.update({f"encoder_lora.{k}": v for k, v in lora_state_dict(self.encoder).items()})
        if self.config.target_lora is not None:
            state.update(
                {f"target_lora.{k}": v for k, v in lora_state_dict(self.target.model).items()}
            )
        if views:
            return state
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def fingerprint(self) -> str:
        """A key that changes whenever the embeddings would: config, trained tensors and
        the backbones' own weights (sampled, :func:`sampled_digest`: a backbone folder
        updated in place or another weights version changes it), so cached evaluation
        results, ONNX exports and calibrations of another model are never reused. A model
        merged for inference keeps the one it had before merging."""
        if self._adapter_fingerprint is not None:
            return self._adapter_fingerprint
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True, default=str).encode())
        for backbone in (self.encoder, self.target.model):
            h.update(sampled_digest(backbone).encode())
        if self.routed:  # another detector version may route texts differently
            h.update(json.dumps(self.router.describe(), sort_keys=True, default=str).encode())
        for key, tensor in sorted(self.trained_state_dict().items()):
            h.update(key.encode())
            h.update(tensor.float().numpy().tobytes())
        return h.hexdigest()[:20]

    def load_trained_state_dict(self, state: dict[str, torch.Tensor], *, source: str = "") -> None:
        """Load what :meth:`trained_state_dict` wrote; refuse anything that does not fit."""
        expected = self.trained_state_dict()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ModelFolderError(
                f"model folder {source} does not fit this model: missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
                f"{'...' if len(extra) > 5 else ''}. Was it saved for other backbones or settings?"
            )
        for key, tensor in state.items():
            if tensor.shape != expected[key].shape:
                raise ModelFolderError(
                    f"model folder {source}: tensor {key} has shape {tuple(tensor.shape)}, this "
                    f"model expects {tuple(expected[key].shape)} (saved for another backbone?)"
                )
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            part, _, rest = key.partition(".")
            parts.setdefault(part, {})[rest] = tensor
        self.connector.load_state_dict(parts["connector"])
        if self.head is not None:
            self.head.load_state_dict(parts["head"])
        if "encoder_lora" in parts:
            load_lora_state_dict(self.encoder, parts["encoder_lora"])
        if "target_lora" in parts:
            load_lora_state_dict(self.target.model, parts["target_lora"])

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        merge: bool = False,
        card: bool = True,
        evaluation: Any = None,
        training: Any = None,
        license: str | None = None,
        model_id: str | None = None,
    ) -> Path:
        """Write ``lusifer_config.json`` + ``model.safetensors`` atomically, with a model
        card (``README.md``) and the files that let sentence-transformers load the folder
        (:mod:`lusifer.model.card`).

        With ``merge=True`` LoRA is folded into full copies of both backbones saved under
        ``encoder/`` and ``target/``, so the folder stands alone. ``evaluation`` (an
        ``EvaluationReport`` or the ``results.json``/folder ``lusifer evaluate`` wrote) adds
        a ``model-index`` block to the card; ``training`` (the ``TrainConfig`` or its
        ``train_config.yaml``) its data sets and recipe; ``license`` its license;
        ``model_id`` is what its usage snippets load (default: ``directory``).
        ``card=False`` writes the model files only.
        """
        directory = Path(directory)
        with atomic_folder(directory) as tmp:  # an existing folder is replaced whole
            config = self.config.to_dict()
            if merge:
                config.update(self._save_merged_backbones(tmp))
            else:
                save_file(self.trained_state_dict(), str(tmp / WEIGHTS_NAME))
            import transformers

            from .._version import __version__

            meta = {
                "format": "lusifer",
                "format_version": FORMAT_VERSION,
                "lusifer_version": __version__,
                "transformers_version": transformers.__version__,
                "config": config,
            }
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False))
            if card:
                from .card import (
                    build_model_card,
                    write_model_card,
                    write_sentence_transformers_files,
                )

                write_sentence_transformers_files(tmp, max_seq_length=self.config.max_length)
                write_model_card(
                    tmp,
                    build_model_card(
                        self.config,
                        model_id=model_id or str(directory),
                        embedding_size=self.embedding_size,
                        evaluation=evaluation,
                        training=training,
                        license=license,
                    ),
                )
        return directory

    def push_to_hub(
        self,
        repo_id: str,
        *,
        merge: bool = False,
        evaluation: Any = None,
        training: Any = None,
        license: str | None = None,
        **options: Unpack[UploadOptions],
    ) -> Any:
        """Save this model (as :meth:`save_pretrained`, the card's snippets loading
        ``repo_id``) and upload it to the Hugging Face hub repo ``repo_id``, created if
        missing (:func:`lusifer.model.hub.upload`); ``options`` are :class:`lusifer.model.hub.UploadOptions` (token, private,
        revision, commit_message, create_pr). Returns the upload's commit info."""
        import tempfile

        from .hub import upload

        with tempfile.TemporaryDirectory(prefix="lusifer-push-") as tmp:
            folder = self.save_pretrained(
                Path(tmp) / "model",
                merge=merge,
                evaluation=evaluation,
                training=training,
                license=license,
                model_id=repo_id,
            )
            return upload(folder, repo_id, **options)

    def _save_merged_backbones(self, folder: Path) -> dict[str, Any]:
        import copy

        encoder = merge_lora(copy.deepcopy(self.encoder))
        target = merge_lora(copy.deepcopy(self.target.model))
        encoder.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "encoder")
        target.save_pretrained(folder / "target")
        self.target.tokenizer.save_pretrained(folder / "target")
        state = {f"connector.{k}": v for k, v in self.connector.state_dict().items()}
        if self.head is not None:
            state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(folder / WEIGHTS_NAME))
        return {
            "encoder": "./encoder",
            "target": "./target",
            "encoder_lora": None,
            "target_lora": None,
        }

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device | None = None
    ) -> LusiferModel:
        """Reload a model saved by :meth:`save_pretrained` (a folder or a hub repo id), or a
        folder in the reference code's published layout (:mod:`lusifer.model.loading`)."""
        return load_model_folder(cls, directory, device=device)
