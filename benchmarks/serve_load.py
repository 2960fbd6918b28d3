"""Load test of a real ``lusifer serve`` process on loopback: requests/s, latency, the
server's memory and its answers under overload, at 1, 8, 32 and 128 concurrent clients.

Not a test. Starts ``python -m lusifer.cli serve MODEL --host 127.0.0.1`` on a free port
with a small request queue, runs each client level for a fixed time (``--duration``
seconds; at most ``--max-requests`` requests), samples the server's RSS from
/proc/<pid>/status all along, prints a table and PASS/FAIL checks, stops the server and
exits (status 1 if a check failed). Only 127.0.0.1 is ever used.

Checks, at the top level (128 clients by default, several times the queue):
  * the server sheds load: some requests get 503 with a Retry-After header, and every
    503 carries one; no other 5xx, no connection without an answer;
  * its peak RSS grows by less than ``--rss-limit`` percent from the previous level's;
  * it is still up and healthy afterwards.

Each client keeps one HTTP/1.1 connection and speaks the protocol by hand (httpx costs
more CPU per request than the server, so at 128 clients it measured itself). Clients
honour Retry-After (they wait that long before their next request, as the OpenAI client
does) unless ``--ignore-retry-after``, which makes them retry at once. The server gets all
cores but one (``--threads``); the clients run on the same machine.

    .venv/bin/python benchmarks/serve_load.py
    .venv/bin/python benchmarks/serve_load.py --duration 5 --ignore-retry-after
    .venv/bin/python benchmarks/serve_load.py --model runs/my-model --backend onnx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from _sentences import load_sentences  # noqa: E402

HOST = "127.0.0.1"  # loopback only, never configurable


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_status_kib(pid: int, field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of ``pid`` in KiB (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples the server's VmRSS every ``interval`` seconds in a thread; :meth:`phase`
    returns the peak since the previous call."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss is None:
                return
            with self._lock:
                self._peak = max(self._peak, rss)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def phase(self) -> int:
        rss = proc_status_kib(self.pid, "VmRSS") or 0
        with self._lock:
            peak, self._peak = max(self._peak, rss), rss
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Connection:
    """One keep-alive HTTP/1.1 connection to the server, spoken by hand: a load
    generator built on a full client library (httpx) spends more CPU per request than
    the server does, and with 128 clients on a small machine it measures itself."""

    IDLE_S = 4.0  # reconnect before uvicorn's 5 s keep-alive timeout closes it

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def _roundtrip(self, request: bytes) -> tuple[int, dict[str, str]]:
        if self.writer is None or time.perf_counter() - self.last_used > self.IDLE_S:
            self.close()
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(request)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        self.last_used = time.perf_counter()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers

    async def post(self, path: str, body: bytes, timeout: float) -> tuple[int, dict[str, str]]:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("ascii") + body
        reused = self.writer is not None
        try:
            return await asyncio.wait_for(self._roundtrip(request), timeout)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
        # A kept-alive connection the server had just closed: once more on a new one.
        return await asyncio.wait_for(self._roundtrip(request), timeout)


async def run_level(
    port: int,
    bodies: list[bytes],
    *,
    clients: int,
    duration: float,
    max_requests: int,
    honour_retry_after: bool,
) -> dict:
    """``clients`` coroutines, each on its own connection, send requests back to back
    for ``duration`` seconds (or until ``max_requests`` were sent)."""
    latencies: list[float] = []  # of 2xx answers, seconds
    shed_latencies: list[float] = []  # of 503 answers, seconds
    status: dict[int, int] = {}
    failures: dict[str, int] = {}  # requests without an answer, by exception
    shed = {"503": 0, "503_with_retry_after": 0}
    sent = 0
    deadline = time.perf_counter() + duration

    async def client() -> None:
        nonlocal sent
        conn = Connection(port)
        try:
            while sent < max_requests and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                start = time.perf_counter()
                try:
                    code, headers = await conn.post("/v1/embeddings", body, timeout=120)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as err:
                    status[0] = status.get(0, 0) + 1  # no answer at all
                    failures[type(err).__name__] = failures.get(type(err).__name__, 0) + 1
                    conn.close()
                    continue
                status[code] = status.get(code, 0) + 1
                if 200 <= code < 300:
                    latencies.append(time.perf_counter() - start)
                elif code == 503:
                    shed_latencies.append(time.perf_counter() - start)
                    shed["503"] += 1
                    retry_after = headers.get("retry-after")
                    if retry_after is not None and retry_after.isdigit():
                        shed["503_with_retry_after"] += 1
                        if honour_retry_after:
                            wait = min(float(retry_after), deadline - time.perf_counter())
                            if wait > 0:
                                await asyncio.sleep(wait)
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    shed_lat = np.array(shed_latencies) * 1000 if shed_latencies else np.array([np.nan])
    by_class = {
        k: sum(v for s, v in status.items() if s // 100 == k // 100) for k in (200, 400, 500)
    }
    return {
        "clients": clients,
        "sent": sent,
        "wall": wall,
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "2xx": by_class[200],
        "4xx": by_class[400],
        "5xx": by_class[500],
        "p50_503": float(np.percentile(shed_lat, 50)),
        "no_answer": status.get(0, 0),
        "failures": failures,
        **shed,
    }


def ms(value: float) -> str:
    return "-" if np.isnan(value) else f"{value:.0f}"


def start_server(args, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "lusifer.cli",
        "serve",
        args.model,
        "--host",
        HOST,
        "--port",
        str(port),
        "--backend",
        args.backend,
        "--max-queue",
        str(args.max_queue),
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-wait-ms",
        str(args.max_wait_ms),
        "--max-length",
        "128",
        "--model-name",
        "bench",
    ]
    if args.quantize:
        cmd += ["--quantize", args.quantize]
    cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LUSIFER_API_KEY", None)
    print("server:", " ".join(cmd[1:]), flush=True)
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would stall it
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not come up in {timeout:.0f}s")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="all-MiniLM-L6-v2",
        help="What `lusifer serve` loads (default: the bundled all-MiniLM-L6-v2, offline).",
    )
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="The server's intra-op threads (default: all cores but one, left to the clients).",
    )
    parser.add_argument("--levels", default="1,8,32,128", help="Concurrent clients per phase.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per phase.")
    parser.add_argument(
        "--max-requests", type=int, default=100_000, help="Requests per phase at most."
    )
    parser.add_argument("--per-request", type=int, default=1, help="Texts per request.")
    parser.add_argument("--max-queue", type=int, default=32, help="The server's --max-queue.")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--rss-limit", type=float, default=10.0, help="Allowed RSS growth to the top level, %%."
    )
    parser.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="Clients retry a 503 at once instead of waiting Retry-After seconds.",
    )
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    args = parser.parse_args()
    levels = [int(c) for c in args.levels.split(",")]
    if any(c < 1 for c in levels) or args.duration <= 0 or args.max_requests < 1:
        parser.error("levels, --duration and --max-requests must be positive")
    if args.duration > 600 or max(levels) > 1024:
        parser.error("bounded run: --duration <= 600 s and at most 1024 clients")

    texts = load_sentences(2000)
    k = args.per_request
    bodies = [
        json.dumps({"input": [texts[(i * k + j) % len(texts)] for j in range(k)]}).encode()
        for i in range(len(texts))
    ]
    load_before = os.getloadavg()
    port = free_port()
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        log_path = Path(tmp) / "server.log"
        proc = start_server(args, port, log_path)
        try:
            wait_healthy(proc, url, args.startup_timeout, log_path)
            for _ in range(3):  # warm-up, not measured
                httpx.post(f"{url}/v1/embeddings", json={"input": texts[:8]}, timeout=120)
            sampler = RssSampler(proc.pid).start()
            sampler.phase()
            rows = []
            for clients in levels:
                row = asyncio.run(
                    run_level(
                        port,
                        bodies,
                        clients=clients,
                        duration=args.duration,
                        max_requests=args.max_requests,
                        honour_retry_after=not args.ignore_retry_after,
                    )
                )
                row["rss_peak_mib"] = sampler.phase() / 1024
                row["hwm_mib"] = (proc_status_kib(proc.pid, "VmHWM") or 0) / 1024
                rows.append(row)
                print(
                    f"  {clients} clients: {row['2xx']} ok, {row['5xx']} 5xx in {row['wall']:.1f}s",
                    flush=True,
                )
            sampler.stop()
            alive = proc.poll() is None
            healthy = alive and httpx.get(f"{url}/health", timeout=10).status_code == 200
            access_lines = sum(1 for line in log_path.open() if "/v1/embeddings" in line)
        finally:
            stop_server(proc)
        tail = log_path.read_text().splitlines()[-3:]

    print()
    print(
        f"model {args.model} ({args.backend}), server --max-queue {args.max_queue} "
        f"--max-batch-size {args.max_batch_size}, {args.per_request} text(s)/request, "
        f"{args.duration:g} s per level, clients "
        f"{'ignore' if args.ignore_retry_after else 'honour'} Retry-After; "
        f"nproc {os.cpu_count()}, server threads {args.threads}, load average before/after "
        f"{load_before[0]:.2f}/{os.getloadavg()[0]:.2f}"
    )
    print()
    print(
        "| clients | requests/s (2xx) | p50 ms | p99 ms | 2xx | 4xx | 5xx | 503 with "
        "Retry-After | 503 p50 ms | no answer | peak RSS MiB | VmHWM MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['rps']:.1f} | {ms(r['p50'])} | {ms(r['p99'])} | "
            f"{r['2xx']} | {r['4xx']} | {r['5xx']} | {r['503_with_retry_after']} | "
            f"{ms(r['p50_503'])} | {r['no_answer']} | {r['rss_peak_mib']:.0f} | "
            f"{r['hwm_mib']:.0f} |"
        )
    for r in rows:
        if r["failures"]:
            print(f"{r['clients']} clients, requests without an answer: {r['failures']}")
    print(f"server access-log lines for /v1/embeddings: {access_lines}; last lines: {tail}")
    print()

    top = rows[-1]
    checks = [
        (
            f"{top['clients']} clients: the full queue answers 503 with Retry-After",
            top["503"] > 0 and top["503_with_retry_after"] == top["503"],
            f"{top['503']} x 503, {top['503_with_retry_after']} with Retry-After",
        ),
        (
            f"{top['clients']} clients: no other 5xx, no dropped connections",
            top["5xx"] == top["503"] and not top["no_answer"],
            f"{top['5xx']} x 5xx, {top['no_answer']} without an answer",
        ),
    ]
    if len(rows) >= 2:
        prev = rows[-2]
        growth = 100 * (top["rss_peak_mib"] - prev["rss_peak_mib"]) / prev["rss_peak_mib"]
        checks.append(
            (
                f"peak RSS growth {prev['clients']} -> {top['clients']} clients "
                f"< {args.rss_limit:g}%",
                growth < args.rss_limit,
                f"{prev['rss_peak_mib']:.0f} -> {top['rss_peak_mib']:.0f} MiB ({growth:+.1f}%)",
            )
        )
    checks.append(("the server is up and healthy afterwards", healthy, f"alive={alive}"))
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
