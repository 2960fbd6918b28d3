"""Publishing to the Hugging Face hub: ``LusiferModel.push_to_hub`` and ``lusifer push``.

Both save (or copy) the model folder into a temporary folder, write its model card with
the hub repo id in the usage snippets, then call ``huggingface_hub.HfApi.create_repo``
(``exist_ok=True``) and ``HfApi.upload_folder``. A pushed repo loads back with
``LusiferModel.from_pretrained(repo_id)`` and, with ``trust_remote_code=True``, with
``SentenceTransformer(repo_id)``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Unpack

from ..types import UploadOptions


def _api(token: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(token=token)


def upload(folder: Path, repo_id: str, **options: Unpack[UploadOptions]) -> Any:
    """Create the model repo if needed and upload ``folder`` to it; the commit info."""
    api = _api(options.get("token"))
    api.create_repo(repo_id, repo_type="model", private=options.get("private"), exist_ok=True)
    revision = options.get("revision")
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message=options.get("commit_message") or "Upload LUSIFER model",
        create_pr=options.get("create_pr", False),
    )


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    evaluation: Any = None,
    evaluation_model: str | None = None,
    training: Any = None,
    license: str | None = None,
    **options: Unpack[UploadOptions],
) -> Any:
    """Upload a saved LUSIFER folder as it is (no model is loaded), with its card and
    sentence-transformers files written afresh for ``repo_id`` in a temporary copy."""
    from .card import card_for_folder, write_model_card, write_sentence_transformers_files
    from .loading import CONFIG_NAME, folder_layout

    folder = Path(folder)
    if folder_layout(folder) != "lusifer":
        raise ValueError(
            f"{folder} is not a LUSIFER folder saved by save_pretrained (no {CONFIG_NAME})"
        )
    card = card_for_folder(
        folder,
        model_id=repo_id,
        evaluation=evaluation,
        evaluation_model=evaluation_model,
        training=training,
        license=license,
    )
    import json

    max_length = json.loads((folder / CONFIG_NAME).read_text())["config"].get("max_length", 512)
    with tempfile.TemporaryDirectory(prefix="lusifer-push-") as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(".*", "__pycache__", "onnx"))
        write_sentence_transformers_files(copy, max_seq_length=int(max_length))
        write_model_card(copy, card)
        return upload(copy, repo_id, **options)
