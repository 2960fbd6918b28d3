"""What a backbone does when used alone, read from its own files: the pooling of its
sentence-transformers ``1_Pooling`` folder, the token limit of ``sentence_bert_config.json``
(256 for all-MiniLM-L6-v2, where its tokenizer allows 512), the query/document prompts of
``config_sentence_transformers.json``, and a bundled backbone's registry entry. The plain
embedder and a routed model's native route both read it, so either equals the stock
sentence-transformers model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import Backbone

# sentence-transformers' pooling modes -> ours
_ST_POOLING = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
}


def _read_json(folder: str, name: str) -> dict[str, Any] | None:
    """A JSON file of a backbone folder (or of its hub repo, when reachable), else None."""
    path = Path(folder) / name
    if not path.is_file():
        if Path(folder).is_dir():
            return None
        try:
            from transformers.utils import cached_file

            found = cached_file(folder, name, _raise_exceptions_for_missing_entries=False)
        except OSError:
            return None
        if found is None:
            return None
        path = Path(found)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def own_settings(target: Backbone) -> dict[str, Any]:
    """What the target does alone: a bundled backbone's registry entry, else its
    sentence-transformers files (pooling, token limit, query/document prompts)."""
    own: dict[str, Any] = {}
    pooling = _read_json(target.path, "1_Pooling/config.json") or {}
    modes = [ours for key, ours in _ST_POOLING.items() if pooling.get(key)]
    if modes:
        own["pooling"] = modes[0]
    limit = (_read_json(target.path, "sentence_bert_config.json") or {}).get("max_seq_length")
    if isinstance(limit, int) and limit > 0:
        own["max_length"] = limit
    prompts = (_read_json(target.path, "config_sentence_transformers.json") or {}).get("prompts")
    if isinstance(prompts, dict):
        for kind, names in (("query", ("query",)), ("document", ("document", "passage"))):
            found = [prompts[n] for n in names if isinstance(prompts.get(n), str)]
            if found:
                own[f"{kind}_prefix"] = found[0]
    if "/" not in target.reference:
        from .offline import find_offline_backbone

        info = find_offline_backbone(target.reference)
        if info is not None:
            own.update(
                pooling=info.pooling,
                query_prefix=info.query_prefix,
                document_prefix=info.document_prefix,
            )
    return own
