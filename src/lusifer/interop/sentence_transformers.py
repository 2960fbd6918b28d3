"""A LUSIFER model as a ``sentence_transformers.SentenceTransformer``.

``LusiferModule`` is an input module (tokenises with the encoder's tokenizer, prompts
included, and returns ``sentence_embedding``); the pipeline is
``[LusiferModule, Normalize]``, so ``SentenceTransformer.encode`` equals
``LusiferModel.encode`` (normalised). ST prompts map onto LUSIFER's instruction and
``encode_query``/``encode_document`` onto ``kind``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import InputModule
from sentence_transformers.sentence_transformer.modules import Normalize

from ..model.loading import is_lusifer_folder
from ..model.lusifer import LusiferModel
from ..model.routing import check_route

LUSIFER_SUBFOLDER = "lusifer"
MODULES_FILE = "modules.json"


class LusiferModule(InputModule):
    """Wraps :class:`LusiferModel` for sentence-transformers (text input, pooled output)."""

    config_keys = ["use_head", "max_seq_length", "route"]
    config_file_name = "lusifer_module.json"

    def __init__(
        self,
        model: LusiferModel | str | Path,
        use_head: bool = False,
        max_seq_length: int | None = None,
        route: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, LusiferModel):
            model = LusiferModel.from_pretrained(model)
        self.model = model
        self.tokenizer = model.tokenizer
        self.use_head = use_head
        self.max_seq_length = max_seq_length or model.config.max_length
        # a routed model's route ("auto": English on the target alone), as in encode
        self.route = check_route(route, routed=model.routed)
        if use_head and self.route != "connector":
            raise ValueError("use_head=True has no native route; give route='connector'")

    # text only: narrower than sentence-transformers' multimodal signatures
    def preprocess(  # type: ignore[override]
        self,
        inputs: list[str],
        prompt: str | None = None,
        task: str | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Tokenise with LUSIFER's prompts: ``prompt`` is the English instruction;
        ``task`` ("query"/"document", set by ``encode_query``/``encode_document``) the kind."""
        kind = task if task in ("query", "document") else "query"
        texts = [t if isinstance(t, str) else t[0] for t in inputs]
        routes = (
            self.model.router.routes(texts) if self.route == "auto" else [self.route] * len(texts)
        )
        rows = {r: [i for i, got in enumerate(routes) if got == r] for r in ("connector", "native")}
        features: dict[str, torch.Tensor] = {
            f"{r}_rows": torch.tensor(index, dtype=torch.long) for r, index in rows.items()
        }
        if rows["connector"]:
            enc = self.model.tokenize(
                [texts[i] for i in rows["connector"]],
                instruction=prompt or None,
                kind=kind,
                max_length=self.max_seq_length,
            )
            # pool_mask appears when the model pools over the text only (no instruction)
            features.update(
                {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "pool_mask")}
            )
        if rows["native"]:
            enc = self.model.native_route.tokenize(
                [texts[i] for i in rows["native"]], kind=kind, instruction=prompt or None
            )
            features["native_input_ids"] = enc["input_ids"]
            features["native_attention_mask"] = enc["attention_mask"]
        return features

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        connector, native = features["connector_rows"], features["native_rows"]
        out = torch.zeros(len(connector) + len(native), self.model.embedding_size)
        out = out.to(self.model.device)
        if len(connector):
            extra = {"pool_mask": features["pool_mask"]} if "pool_mask" in features else {}
            out[connector] = self.model(
                features["input_ids"], features["attention_mask"], use_head=self.use_head, **extra
            ).float()
        if len(native):
            out[native] = self.model.native_route(
                features["native_input_ids"], features["native_attention_mask"]
            ).float()
        features["sentence_embedding"] = out
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.model.embedding_size

    def get_embedding_dimension(self) -> int:
        return self.model.embedding_size

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        self.model.save_pretrained(Path(output_path) / LUSIFER_SUBFOLDER, card=False)
        self.save_config(output_path)

    @classmethod
    def load(  # type: ignore[override]
        cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any
    ) -> LusiferModule:
        """From a folder :func:`save_sentence_transformers` wrote (the model under
        ``lusifer/``), or from a LUSIFER folder or hub repo that ``save_pretrained`` or
        ``push_to_hub`` wrote (the model at the top, beside ``modules.json``)."""
        folder = Path(model_name_or_path) / subfolder
        config = cls.load_config(
            str(model_name_or_path),
            subfolder=subfolder,
            **{k: kwargs[k] for k in ("token", "cache_folder", "revision") if k in kwargs},
        )
        if (folder / LUSIFER_SUBFOLDER).is_dir():
            model = LusiferModel.from_pretrained(folder / LUSIFER_SUBFOLDER)
        elif folder.is_dir() or subfolder:
            model = LusiferModel.from_pretrained(folder)
        else:  # a hub repo id
            model = LusiferModel.from_pretrained(model_name_or_path)
        return cls(model, **config)


def to_sentence_transformer(
    model_or_path: LusiferModel | str | Path,
    *,
    use_head: bool = False,
    device: str | None = None,
    route: str | None = None,
) -> SentenceTransformer:
    """A ``SentenceTransformer`` from a ``LusiferModel``, a LUSIFER folder, or a folder
    written by :func:`save_sentence_transformer` (no ``trust_remote_code`` needed: the
    module class is ours, not imported from the folder). ``route`` fixes a routed
    model's route ("auto", "native", "connector"; default: the model's "auto")."""
    if isinstance(model_or_path, LusiferModel):
        module = LusiferModule(model_or_path, use_head=use_head, route=route)
    else:
        path = Path(model_or_path)
        if (path / MODULES_FILE).is_file() and (path / LUSIFER_SUBFOLDER).is_dir():
            _check_modules_file(path)
            module = LusiferModule.load(str(path))
        elif is_lusifer_folder(path):
            module = LusiferModule(path, use_head=use_head, route=route)
        else:
            module = LusiferModule(
                LusiferModel.from_pretrained(path), use_head=use_head, route=route
            )
    st = SentenceTransformer(modules=[module, Normalize()], device=device or "cpu")
    return st


def save_sentence_transformer(model_or_path: LusiferModel | str | Path, path: str | Path) -> Path:
    """Write a sentence-transformers folder; it reloads with
    ``SentenceTransformer(path, trust_remote_code=True)`` wherever ``lusifer`` is installed
    (the ``modules.json`` type names ``lusifer.interop.sentence_transformers.LusiferModule``),
    or without the flag through :func:`to_sentence_transformer`."""
    st = to_sentence_transformer(model_or_path)
    st.save(str(path))
    return Path(path)


def _check_modules_file(path: Path) -> None:
    modules = json.loads((path / MODULES_FILE).read_text())
    types = [m.get("type", "") for m in modules]
    if not types or not types[0].endswith(f"{__name__}.LusiferModule"):
        raise ValueError(
            f"{path / MODULES_FILE}: the first module is {types[:1]}, not a LUSIFER module"
        )
