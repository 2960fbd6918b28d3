"""The embeddings server, started for real (uvicorn on a free loopback port)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from lusifer.serving import BackgroundServer, ServerSettings, create_app, free_port

MAX_LENGTH = 64
TEXTS = [
    "The cat sits on the mat.",
    "Le chat est assis sur le tapis.",
    "Кошка сидит на коврике.",
    "猫がマットの上に座っている。",
    "El gato está sentado en la alfombra, mirando por la ventana.",
    "x",
]


@pytest.fixture(scope="module")
def model(tiny_model_factory):
    return tiny_model_factory("bert")


@pytest.fixture(scope="module")
def server(model):
    settings = ServerSettings(
        max_batch_size=8,
        max_wait_ms=20,
        max_queue=64,
        max_inputs_per_request=8,
        max_chars_per_input=200,
        max_length=MAX_LENGTH,
    )
    with BackgroundServer(create_app(model, model_name="tiny", settings=settings)) as url:
        yield url


def expected(model, texts, **kwargs):
    return model.encode(texts, max_length=MAX_LENGTH, **kwargs)


def post(url, body):
    return httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)


def test_single_string(server, model):
    r = post(server, {"input": TEXTS[1], "model": "tiny"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny"
    assert [d["index"] for d in body["data"]] == [0]
    got = np.array(body["data"][0]["embedding"], dtype=np.float32)
    np.testing.assert_allclose(got, expected(model, [TEXTS[1]])[0], atol=1e-5)
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]


def test_batch_with_instruction_and_kind(server, model):
    body = {"input": TEXTS, "instruction": "Retrieve the translation", "kind": "document"}
    r = post(server, body)
    assert r.status_code == 200, r.text
    got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    want = expected(model, TEXTS, instruction="Retrieve the translation", kind="document")
    np.testing.assert_allclose(got, want, atol=1e-5)
    plain = expected(model, TEXTS)
    assert not np.allclose(got, plain, atol=1e-3)  # the prompt reached the model
    assert "x-lusifer-instruction-ignored" not in r.headers


def test_a_model_without_instructions_says_it_ignored_one(tiny_model_factory):
    bare = tiny_model_factory("bert", use_instructions=False)
    with BackgroundServer(create_app(bare, model_name="bare")) as url:
        assert httpx.get(f"{url}/health").json()["reads_instructions"] is False
        r = post(url, {"input": TEXTS[:2], "instruction": "Retrieve the translation"})
        assert r.status_code == 200, r.text
        assert "no instructions" in r.headers["x-lusifer-instruction-ignored"]
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, bare.encode(TEXTS[:2]), atol=1e-5)
        assert "x-lusifer-instruction-ignored" not in post(url, {"input": "a"}).headers


def test_concurrent_clients_are_batched_and_exact(server, model):
    instructions = [None, "Find the answer"]
    jobs = [
        ([TEXTS[i % len(TEXTS)], TEXTS[(i * 3 + 1) % len(TEXTS)]], instructions[i % 2])
        for i in range(16)
    ]

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{server}/v1/embeddings", json={"input": texts, "instruction": inst}
                    )
                    for texts, inst in jobs
                )
            )

    responses = asyncio.run(run())
    for (texts, inst), r in zip(jobs, responses, strict=True):
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, expected(model, texts, instruction=inst), atol=1e-5)


def test_base64_and_dimensions(server, model):
    r = post(server, {"input": TEXTS[:2], "encoding_format": "base64", "dimensions": 8})
    assert r.status_code == 200, r.text
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]]
    want = expected(model, TEXTS[:2])[:, :8]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    for row, w in zip(rows, want, strict=True):
        assert row.shape == (8,)
        np.testing.assert_allclose(row, w, atol=1e-5)
        assert abs(np.linalg.norm(row) - 1) < 1e-5


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tiny"}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", 3]}, "input[1]"),
        ({"input": ["ok", None]}, "input[1]"),
        ({"input": ["ok", ""]}, "input[1]"),
        ({"input": "ok", "kind": "passage"}, "kind"),
        ({"input": "ok", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "ok", "dimensions": 0}, "dimensions"),
        ({"input": "ok", "dimensions": 100000}, "dimensions"),
        ({"input": ["a"] * 9}, "input"),
        ({"input": ["short", "y" * 201]}, "input[1]"),
        ({"input": "ok", "colour": "red"}, "colour"),
    ],
)
def test_bad_requests_name_the_field(server, body, param):
    r = post(server, body)
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    assert param.split("[")[0] in error["message"]


def test_malformed_json(server):
    r = httpx.post(
        f"{server}/v1/embeddings",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]


def test_health_and_openapi(server, model):
    r = httpx.get(f"{server}/health")
    assert r.status_code == 200
    health = r.json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert health["dimensions"] == model.embedding_size
    assert health["reads_instructions"] is True
    spec = httpx.get(f"{server}/openapi.json").json()
    assert "/v1/embeddings" in spec["paths"]
    props = spec["components"]["schemas"]["EmbeddingRequest"]["properties"]
    assert {"input", "instruction", "kind", "dimensions", "encoding_format"} <= set(props)


class SlowEncoder:
    """Sleeps in encode, so requests pile up."""

    name = "slow"
    embedding_size = 4

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    def encode(self, texts, **kwargs):
        self.calls += 1
        time.sleep(self.delay)
        out = np.ones((len(texts), 4), dtype=np.float32)
        return out / 2.0


def test_overload_answers_503():
    settings = ServerSettings(max_batch_size=1, max_wait_ms=0, max_queue=1)
    with BackgroundServer(create_app(SlowEncoder(0.5), settings=settings)) as url:

        async def run():
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(
                    *(client.post(f"{url}/v1/embeddings", json={"input": "a"}) for _ in range(8))
                )

        codes = [r.status_code for r in asyncio.run(run())]
        assert 503 in codes and 200 in codes, codes
        assert set(codes) <= {200, 503}
        # once the queue drains the server answers again
        assert (
            httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=60).status_code == 200
        )


def test_shutdown_finishes_in_flight_requests():
    encoder = SlowEncoder(1.0)
    server = BackgroundServer(create_app(encoder, settings=ServerSettings(max_wait_ms=0)))
    url = server.start()
    result = {}

    def call():
        result["r"] = httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=60)

    thread = threading.Thread(target=call)
    thread.start()
    while encoder.calls == 0:  # the request reached the model
        time.sleep(0.01)
    server.stop()
    thread.join(30)
    assert result["r"].status_code == 200
    assert not server.thread.is_alive()


def test_serve_command_subprocess(tmp_path, model):
    folder = model.save_pretrained(tmp_path / "tiny-model")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LUSIFER_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lusifer.cli", "serve", str(folder), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        r = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[0]}, timeout=60)
        assert r.status_code == 200, r.text
        got = np.array(r.json()["data"][0]["embedding"], dtype=np.float32)
        np.testing.assert_allclose(got, model.encode([TEXTS[0]])[0], atol=1e-5)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    log = proc.stdout.read().decode()
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log, log


class BrokenEncoder(SlowEncoder):
    def encode(self, texts, **kwargs):
        raise RuntimeError("boom")


def test_model_failure_is_a_json_500():
    with BackgroundServer(create_app(BrokenEncoder(0))) as url:
        r = httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=60)
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error"
        assert "boom" in r.json()["error"]["message"]
        # the worker survives
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
