"""The paper's encoder-side prompts: an English instruction in front of the text."""

from __future__ import annotations

from ..types import TextKind

QUERY_TEMPLATE = "{instruction}.\n{text}"
DOCUMENT_TEMPLATE = "{instruction}. Candidate:\n{text}"


def format_prompt(
    text: str,
    instruction: str | None,
    kind: TextKind,
    *,
    query_template: str = QUERY_TEMPLATE,
    document_template: str = DOCUMENT_TEMPLATE,
) -> str:
    """``{instruction}.\\n{text}`` for queries, ``{instruction}. Candidate:\\n{text}`` for
    documents; the bare text when there is no instruction."""
    if kind not in ("query", "document"):
        raise ValueError(f"kind must be 'query' or 'document', got {kind!r}")
    if not instruction:
        return text
    template = query_template if kind == "query" else document_template
    return template.format(instruction=instruction.strip().rstrip("."), text=text)
