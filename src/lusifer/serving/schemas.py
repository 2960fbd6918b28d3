"""Request and response bodies of the OpenAI-compatible embeddings API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``: OpenAI's fields plus our ``instruction`` and ``kind``."""

    model_config = ConfigDict(extra="forbid")

    input: StrictStr | list[StrictStr] = Field(
        description="A text or a list of texts to embed (any language)."
    )
    model: str | None = Field(
        default=None, description="Accepted for compatibility; the served model answers."
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="float: JSON numbers; base64: little-endian float32 bytes."
    )
    dimensions: int | None = Field(
        default=None, ge=1, description="Keep the first N dimensions, then re-normalise."
    )
    instruction: str | None = Field(
        default=None, description="One-line English task instruction (LUSIFER prompt)."
    )
    kind: Literal["query", "document"] = Field(
        default="query", description="query or document: picks the prompt template."
    )
    route: Literal["auto", "native", "connector"] | None = Field(
        default=None,
        description="A routed model's route: auto (English on the target alone, the rest "
        "through the connector), native or connector for every text.",
    )
    user: str | None = Field(default=None, description="Ignored (OpenAI compatibility).")


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok", "shutting_down"]
    model: str
    backend: str
    dimensions: int | None
    reads_instructions: bool
    queued_requests: int
    max_queue: int


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models`` (OpenAI's model object)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lusifer"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
