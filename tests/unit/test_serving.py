"""The embeddings server, started for real (uvicorn on a free loopback port)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from helpers import FakeEmbedder
from typer.testing import CliRunner

import lusifer.commands.serve as serve_module
import lusifer.serving
from lusifer.cli import app as cli_app
from lusifer.serving import (
    BackgroundServer,
    MicroBatcher,
    QueueFullError,
    ServerSettings,
    create_app,
    free_port,
    is_loopback,
)

API_KEY = "s3cret-key"

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


def slow_encoder(delay: float = 0.0, **options) -> FakeEmbedder:
    """A 4-d fake model that sleeps ``delay`` seconds in encode, so requests pile up."""
    return FakeEmbedder("slow", dim=4, delay=delay, **options)


def assert_error_shape(r, status, code=None):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.mark.parametrize("early", [True, False], ids=["shed-before-reading", "at-the-queue"])
def test_a_full_queue_answers_503_with_retry_after(monkeypatch, early):
    if not early:  # the race the middleware cannot see: room at its check, none at submit
        monkeypatch.setattr(MicroBatcher, "full", property(lambda self: False))
    encoder = slow_encoder(blocking=True)  # blocks in encode until released
    settings = ServerSettings(max_batch_size=1, max_wait_ms=0, max_queue=2)
    with (
        BackgroundServer(create_app(encoder, settings=settings)) as url,
        ThreadPoolExecutor(3) as pool,
    ):
        embed = lambda: httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=60)  # noqa: E731
        held = [pool.submit(embed)]  # taken by the worker, which blocks in encode
        assert encoder.entered.wait(30)
        held += [pool.submit(embed) for _ in range(2)]  # fill the queue (2)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health").json()["queued_requests"] < 2:
            assert time.monotonic() < deadline, "requests never queued"
            time.sleep(0.01)
        for _ in range(3):  # no room: answered at once, however many come
            r = httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=10)
            error = assert_error_shape(r, 503, "queue_full")
            assert error["type"] == "server_overloaded"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.headers["x-request-id"]
        # the shed comes before validation: even a bad request gets the 503, unread
        bad = httpx.post(f"{url}/v1/embeddings", json={"input": []}, timeout=10)
        assert bad.status_code == (503 if early else 400), bad.text
        assert httpx.get(f"{url}/health").status_code == 200  # the server still answers
        encoder.release.set()
        assert [f.result(30).status_code for f in held] == [200, 200, 200]
        assert embed().status_code == 200  # once the queue drains the server answers again


def test_retry_after_follows_the_measured_drain_rate():
    batcher = MicroBatcher(lambda *a: None, max_queue=4)

    async def run():
        await batcher.start()
        batcher._queue.put_nowait(None)  # stops the worker at once; the queue is then empty
        await batcher._worker
        for _ in range(4):
            batcher._queue.put_nowait(object())
        batcher.seconds_per_request = 2.5
        assert batcher.retry_after() == 10  # 4 queued x 2.5 s
        assert batcher.full
        with pytest.raises(QueueFullError) as err:
            await batcher.submit(["a"], None, "query")
        assert err.value.retry_after == 10
        batcher.seconds_per_request = 100.0
        assert batcher.retry_after() == 60  # capped
        batcher.seconds_per_request = 0.0
        assert batcher.retry_after() == 1  # nothing measured yet: at least 1 s
        batcher._executor.shutdown()

    asyncio.run(run())


def test_shutdown_finishes_in_flight_requests():
    encoder = slow_encoder(1.0)
    server = BackgroundServer(create_app(encoder, settings=ServerSettings(max_wait_ms=0)))
    url = server.start()
    result = {}

    def call():
        result["r"] = httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=60)

    thread = threading.Thread(target=call)
    thread.start()
    while not encoder.calls:  # the request reached the model
        time.sleep(0.01)
    server.stop()
    thread.join(30)
    assert result["r"].status_code == 200
    assert not server.thread.is_alive()


@pytest.mark.slow  # new processes (or a fuzz run): the full suite only
def test_serve_command_subprocess(tmp_path, model):
    folder = model.save_pretrained(tmp_path / "tiny-model")
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "LUSIFER_NUM_THREADS": "1",
        "LUSIFER_API_KEY": API_KEY,
    }
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
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:  # open
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.3)
        denied = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[0]}, timeout=60)
        assert_error_shape(denied, 401, "invalid_api_key")  # the key came from the env
        r = httpx.post(
            f"{url}/v1/embeddings",
            json={"input": TEXTS[0]},
            headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": "test-req-42"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == "test-req-42"
        got = np.array(r.json()["data"][0]["embedding"], dtype=np.float32)
        np.testing.assert_allclose(got, model.encode([TEXTS[0]])[0], atol=1e-5)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    log = proc.stdout.read().decode()
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log, log
    # the access log names each request's id
    line = '"POST /v1/embeddings HTTP/1.1" {} request_id={}$'
    assert re.search(line.format("200 OK", "test-req-42"), log, re.M), log
    denied_id = denied.headers["x-request-id"]
    assert re.search(line.format("401 Unauthorized", denied_id), log, re.M), log
    assert "without an API key" not in log  # loopback and a key: no exposure warning


def test_model_failure_is_a_json_500():
    with BackgroundServer(create_app(slow_encoder(error=RuntimeError("boom")))) as url:
        r = httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=60)
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error"
        assert "boom" in r.json()["error"]["message"]
        assert r.headers["x-request-id"]
        # the worker survives
        assert httpx.get(f"{url}/health").json()["status"] == "ok"


# --- API key, request ids, /v1/models ----------------------------------------------


@pytest.fixture(scope="module")
def keyed_server():
    settings = ServerSettings(max_wait_ms=0, api_key=API_KEY)
    with BackgroundServer(create_app(slow_encoder(), model_name="keyed", settings=settings)) as url:
        yield url


def auth(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        auth("wrong"),
        auth(API_KEY + "x"),
        auth(API_KEY[:-1]),
        {"Authorization": "Bearer"},  # no key
        {"Authorization": API_KEY},  # no scheme
        {"Authorization": f"Basic {API_KEY}"},
    ],
)
def test_a_missing_or_wrong_key_is_a_401(keyed_server, headers):
    for method, path in [
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/keyed"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/path"),
    ]:
        r = httpx.request(
            method, f"{keyed_server}{path}", json={"input": "a"}, headers=headers, timeout=30
        )
        error = assert_error_shape(r, 401, "invalid_api_key")
        assert error["type"] == "invalid_request_error"
        assert r.headers["www-authenticate"] == "Bearer"
        assert API_KEY not in r.text


def test_the_right_key_is_accepted_and_health_stays_open(keyed_server):
    r = httpx.post(
        f"{keyed_server}/v1/embeddings", json={"input": "a"}, headers=auth(API_KEY), timeout=30
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["data"][0]["embedding"]) == 4
    # the scheme is case-insensitive (RFC 6750)
    r = httpx.get(f"{keyed_server}/v1/models", headers={"Authorization": f"bearer {API_KEY}"})
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "keyed"
    health = httpx.get(f"{keyed_server}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_the_key_is_compared_in_constant_time(keyed_server, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert httpx.get(f"{keyed_server}/v1/models", headers=auth("nope")).status_code == 401
    assert httpx.get(f"{keyed_server}/v1/models", headers=auth(API_KEY)).status_code == 200
    assert calls == [(b"nope", API_KEY.encode()), (API_KEY.encode(), API_KEY.encode())]


def test_settings_do_not_show_the_key():
    assert API_KEY not in repr(ServerSettings(api_key=API_KEY))
    for empty in ["", "  "]:
        with pytest.raises(ValueError, match="empty"):
            create_app(slow_encoder(), settings=ServerSettings(api_key=empty))


def test_models_list_shape(server):
    r = httpx.get(f"{server}/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and len(body["data"]) == 1
    card = body["data"][0]
    assert set(card) == {"id", "object", "created", "owned_by"}
    assert card["id"] == "tiny" and card["object"] == "model"
    assert isinstance(card["created"], int) and card["created"] > 1_600_000_000
    assert isinstance(card["owned_by"], str)
    assert httpx.get(f"{server}/v1/models/tiny").json() == card
    missing = httpx.get(f"{server}/v1/models/gpt-4")
    assert assert_error_shape(missing, 404, "model_not_found")["param"] == "model"
    assert_error_shape(httpx.get(f"{server}/nowhere"), 404)
    assert_error_shape(httpx.get(f"{server}/v1/embeddings"), 405)


def test_request_ids(server):
    r = post(server, {"input": "a"})
    generated = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert post(server, {"input": "a"}).headers["x-request-id"] != generated
    for path, body, status in [
        ("/v1/embeddings", {"input": "a"}, 200),
        ("/v1/embeddings", {"input": ""}, 400),
        ("/v1/models", None, 200),
        ("/health", None, 200),
    ]:
        headers = {"X-Request-ID": "client-id_7.a:b"}
        if body is None:
            r = httpx.get(f"{server}{path}", headers=headers)
        else:
            r = httpx.post(f"{server}{path}", json=body, headers=headers, timeout=60)
        assert r.status_code == status, r.text
        assert r.headers.get_list("x-request-id") == ["client-id_7.a:b"]
    # ids that could garble a log line or a header are replaced, not echoed
    for bad in ["has space", "x" * 129, 'quote"d']:
        r = httpx.get(f"{server}/health", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.fixture
def fake_serve(monkeypatch):
    """``lusifer serve`` with a fake model and no server: what it would have served."""
    served = {}
    monkeypatch.setattr(serve_module, "load_embedder", lambda *a: slow_encoder())
    monkeypatch.setattr(lusifer.serving, "serve", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.delenv("LUSIFER_API_KEY", raising=False)
    return served


@pytest.mark.parametrize(
    ("args", "env", "warns", "key"),
    [
        (["--host", "0.0.0.0"], {}, True, None),
        (["--host", "::"], {}, True, None),
        (["--host", "0.0.0.0", "--api-key", "k1"], {}, False, "k1"),
        (["--host", "0.0.0.0"], {"LUSIFER_API_KEY": "k2"}, False, "k2"),
        ([], {}, False, None),
        (["--host", "localhost"], {}, False, None),
    ],
)
def test_serve_warns_when_exposed_without_a_key(fake_serve, args, env, warns, key):
    result = CliRunner().invoke(cli_app, ["serve", "m", *args], env=env)
    assert result.exit_code == 0, result.output
    assert ("warning" in result.stderr) is warns, result.stderr
    if warns:
        assert "--api-key" in result.stderr
    assert fake_serve["app"].state.settings.api_key == key
    assert fake_serve["host"] == (args[1] if args else "127.0.0.1")


def test_serve_refuses_an_empty_key(fake_serve):
    result = CliRunner().invoke(cli_app, ["serve", "m", "--api-key", " "])
    assert result.exit_code == 2
    assert "--api-key" in result.output and "app" not in fake_serve
