"""The server a user would write instead of ``lusifer serve``: sentence-transformers
behind FastAPI, one ``model.encode`` per request, the OpenAI-style route and a health
check. Used by peers_serve.py (infinity-emb cannot be installed beside lusifer: see
docs/research/benchmarks.md).

    python benchmarks/_st_server.py MODEL_FOLDER PORT THREADS
"""

import os
import sys

from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class EmbeddingRequest(BaseModel):
    input: str | list[str]
    model: str | None = None


def create_app(folder: str, max_length: int):
    import torch  # noqa: F401 - before the model, so the thread setting holds
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(folder, device="cpu")
    model.max_seq_length = max_length
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/embeddings")
    def embeddings(request: EmbeddingRequest) -> dict:  # sync: FastAPI runs it in its thread pool
        texts = [request.input] if isinstance(request.input, str) else request.input
        vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
        data = [
            {"object": "embedding", "index": i, "embedding": v.tolist()}
            for i, v in enumerate(vectors)
        ]
        return {"object": "list", "data": data, "model": request.model or "bench"}

    return app


def main() -> None:
    folder, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    max_length = int(sys.argv[4]) if len(sys.argv) > 4 else 128
    import torch
    import uvicorn

    torch.set_num_threads(threads)
    uvicorn.run(create_app(folder, max_length), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
