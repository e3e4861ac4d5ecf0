"""The HTTP scoring service, as a real `python -m recflow.serving` process on 127.0.0.1.

Good requests score like the offline pipeline; every bad input gets a 4xx JSON body
naming the field, record or limit, and the server answers /health afterwards; stalled
clients are cut off by the header and body deadlines; bursts, stalled sockets and
thousands of requests leave it with bounded threads and flat memory; SIGTERM flips
readiness, drains the request in flight and exits 0.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

LIMITS = ["--max-batch", "8", "--max-body-bytes", "20000", "--max-json-depth", "32",
          "--header-timeout", "1", "--body-timeout", "1"]


class Server:
    """One `python -m recflow.serving` process; its URL line parsed from stdout."""

    def __init__(self, bundle: Path, *flags: str, log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recflow.serving", str(bundle), "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
        line = self.process.stdout.readline()  # printed once the socket is listening
        match = re.fullmatch(r"recflow\.serving: model '(\w+)' on http://([\d.]+):(\d+)\n", line)
        if not match:
            self.process.kill()
            pytest.fail(f"the server did not start: {line!r}\n{log.read_text()}")
        self.model, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
        self.url = f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, path: str, body: Any = None, *, raw: bytes | None = None,
             method: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict, http.client.HTTPMessage]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method or ("POST" if data is not None else "GET"), path, body=data,
                         headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            return response.status, json.loads(response.read()), response.headers
        finally:
            conn.close()

    def alive(self) -> bool:
        return self.call("/health")[:2] == (200, {"status": "ok", "model": self.model})

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def _status_of(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Status, JSON body and raw head of one response read off a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body[:length]), head.lower()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True once the server closes the connection (reads EOF), within `seconds`."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


@pytest.fixture(scope="module")
def records(serving_world: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(serving_world["records"].head(9).to_json(orient="records"))


@pytest.fixture(scope="module")
def server(serving_world: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """DIN on a free port, max batch 8, 20 kB bodies, 1 s header/body deadlines."""
    log = tmp_path_factory.mktemp("http") / "server.log"
    server = Server(serving_world["models"]["din"]["bundle"], *LIMITS, log=log)
    yield server
    assert server.stop() == 0, log.read_text()[-2000:]


# ---- good requests --------------------------------------------------------------------------
def test_scores_good_requests_like_the_offline_pipeline(server: Server, serving_world: dict,
                                                         records: list[dict]) -> None:
    assert server.alive() and server.call("/healthz")[0] == 200
    assert server.call("/ready")[:2] == (200, {"status": "ready", "model": "din"})
    status, meta, _ = server.call("/metadata")
    assert status == 200 and "hist_item_id" in meta["fields"]
    assert meta["limits"]["max_batch"] == 8 and meta["limits"]["max_body_bytes"] == 20000
    status, body, headers = server.call("/score", {"records": records[:5]})
    assert status == 200 and body["score_names"] == ["ctr"] and len(body["scores"]) == 5
    assert headers["content-type"] == "application/json"
    got = np.array([s["ctr"] for s in body["scores"]])
    assert np.abs(got - serving_world["models"]["din"]["offline"][:5, 0]).max() <= 1e-5
    assert server.call("/score", records[:2])[0] == 200  # a bare list works too
    assert server.call("/score", {"records": []})[:2] == (200, {
        "model": "din", "score_names": ["ctr"], "scores": [], "stats": {}})
    unseen = {**records[0], "item_id": 10**9, "price": None}
    status, body, _ = server.call("/score", {"records": [unseen]})
    assert status == 200 and body["stats"]["item_id"] == {"oov": 1}
    assert body["stats"]["price"] == {"missing": 1}
    # batches above --inline-max-records go through the thread pool: same scores
    status, body, _ = server.call("/score", {"records": records[:8]})
    assert status == 200 and len(body["scores"]) == 8


def test_request_ids_are_kept_or_made_and_every_request_is_logged(server: Server,
                                                                    records: list) -> None:
    _, _, headers = server.call("/health", headers={"X-Request-ID": "trace-42.a/b"})
    assert headers["x-request-id"] == "trace-42.a/b"
    status, body, headers = server.call("/score", {"rows": []},
                                        headers={"X-Request-ID": "no spaces allowed"})
    made = headers["x-request-id"]
    assert status == 400 and body["request_id"] == made and re.fullmatch(r"[0-9a-f]{16}", made)
    deadline = time.monotonic() + 5
    while "POST /score 400" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log.read_text()
    assert re.search(rf"INFO recflow\.serving: POST /score 400 [\d.]+ ms id={made}\n", log)
    assert re.search(r"GET /health 200 [\d.]+ ms id=trace-42\.a/b\n", log)
    assert "uvicorn.access" not in log


# ---- bad requests: 4xx JSON naming the problem, and the server stays up ----------------------
def _bad_cases(records: list[dict]) -> dict[str, tuple]:
    good = records[0]
    missing = {k: v for k, v in good.items() if k != "price"}
    price = json.dumps({"records": [good]}).replace(f'"price": {json.dumps(good["price"])}',
                                                    '"price": {}')
    assert "{}" in price
    return {  # name: (method, path, body, status, message, extra keys that must match)
        "missing field": ("POST", "/score", {"records": [good, missing]}, 422,
                          "missing field 'price'", {"field": "price", "record": 1}),
        "wrong type": ("POST", "/score", {"records": [{**good, "price": "cheap"}]}, 422,
                       "field 'price' must be a number", {"field": "price", "record": 0}),
        "wrong type in a list": ("POST", "/score", {"records": [good, {**good,
                                 "hist_item_id": [1, [2]]}]}, 422, "field 'hist_item_id'",
                                 {"field": "hist_item_id", "record": 1}),
        "scalar for a history": ("POST", "/score", {"records": [{**good, "hist_item_id": 7}]},
                                 422, "field 'hist_item_id'", {"field": "hist_item_id"}),
        "too many records": ("POST", "/score", {"records": records}, 413,
                             "batch of 9 records exceeds the limit of 8", {"limit": 8}),
        "not JSON": ("POST", "/score", b"{not json", 400, "not valid JSON", {}),
        "not records": ("POST", "/score", {"rows": records}, 400, '{"records"', {}),
        "record not an object": ("POST", "/score", [[1, 2, 3]], 422, "record 0 must be an object",
                                 {"record": 0}),
        "NaN": ("POST", "/score", price.replace("{}", "NaN").encode(), 400,
                "NaN is not valid JSON", {"field": "price", "record": 0}),
        "Infinity": ("POST", "/score", price.replace("{}", "-Infinity").encode(), 400,
                     "-Infinity is not valid JSON", {"field": "price", "record": 0}),
        "huge float": ("POST", "/score", price.replace("{}", "1e400").encode(), 400,
                       "beyond the range of a float64", {"field": "price", "record": 0}),
        "huge integer": ("POST", "/score", price.replace("{}", str(10**400)).encode(), 422,
                         "beyond the range of a float64", {"field": "price", "record": 0}),
        "huge id": ("POST", "/score", {"records": [{**good, "item_id": 10**30}]}, 422,
                    "beyond 64-bit integers", {"field": "item_id", "record": 0}),
        "deep nesting": ("POST", "/score", b"[" * 9999 + b"]" * 9999, 400,  # < 20 kB
                         "nests 9999 levels deep, over the limit of 32", {"limit": 32}),
        "unknown route": ("GET", "/nope", None, 404, "no route GET '/nope'", {}),
        "POST to an unknown route": ("POST", "/nope", {"records": []}, 404, "no route", {}),
        "GET /score": ("GET", "/score", None, 405, "method GET not allowed", {}),
        "PUT": ("PUT", "/score", {"records": []}, 405, "method PUT not allowed", {}),
        "DELETE": ("DELETE", "/health", None, 405, "method DELETE not allowed", {}),
        "PATCH anywhere": ("PATCH", "/nope", b"{}", 405, "method PATCH not allowed", {}),
    }


@pytest.mark.parametrize("case", list(_bad_cases([{"price": 1.0}] * 9)))  # names only
def test_bad_requests_get_a_4xx_naming_the_problem(server: Server, records: list,
                                                    case: str) -> None:
    method, path, body, status, message, extra = _bad_cases(records)[case]
    raw = body if isinstance(body, bytes) else None
    got_status, got, headers = server.call(path, None if raw else body, raw=raw, method=method)
    assert got_status == status and message in got["error"], got
    assert got["status"] == status and got["request_id"] == headers["x-request-id"]
    assert {k: got.get(k) for k in extra} == extra, got
    if status == 405:
        assert "POST" in headers["allow"] or "GET" in headers["allow"]
    assert server.alive()


def test_depth_is_measured_without_parsing_so_no_input_recurses() -> None:
    from recflow.serving.payload import PayloadError, json_depth, parse_records

    assert json_depth(b'{"records": [{"a": "[[[{{", "b": [1, [2]]}]}') == 5  # strings skipped
    assert json_depth(b'["\\"[[", [[]]]') == 3  # an escaped quote does not end a string
    with pytest.raises(PayloadError, match="nests 100000 levels deep") as info:
        parse_records(b"[" * 100_000 + b"]" * 100_000, max_depth=32, max_records=10)
    assert info.value.status == 400 and info.value.extra == {"limit": 32}
    with pytest.raises(PayloadError, match="nests 33 levels"):
        parse_records(b'{"records": ' + b"[" * 32 + b"]" * 32 + b"}", max_depth=32,
                      max_records=10)


class _Broken:
    """A scorer that fails unexpectedly: the app must answer a JSON 500 and log it."""

    name, score_names = "broken", ["ctr"]

    def score_with_stats(self, records: list) -> None:
        raise RuntimeError("boom")


def _asgi(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, dict, dict]:
    """One request through an ASGI app in-process (no sockets)."""
    import asyncio

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "state": {},
             "headers": [(b"content-length", str(len(body)).encode())]}
    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


@pytest.mark.parametrize("n", [1, 40])  # scored inline, and in the thread pool
def test_an_unexpected_failure_is_a_logged_json_500(n: int,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from recflow.serving.app import Limits, create_app

    app = create_app(_Broken(), Limits(inline_max_records=32))  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="recflow.serving"):
        status, headers, got = _asgi(app, "POST", "/score", json.dumps([{}] * n).encode())
    assert status == 500 and got["error"] == "internal error: RuntimeError: boom"
    assert got["request_id"] == headers["x-request-id"]
    failed = [r for r in caplog.records if r.exc_info]
    assert failed and "boom" in str(failed[0].exc_info[1])
    assert any("POST /score 500" in r.getMessage() for r in caplog.records)


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: Server) -> None:
    status, got, headers = server.call("/score", raw=b" " * 30_000)
    assert status == 413 and got["limit"] == 20000 and "--max-body-bytes" in got["error"]
    assert headers["connection"] == "close"  # the unread rest must not become a request
    assert server.alive()


def test_a_chunked_body_is_cut_off_at_the_limit_without_content_length(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"[" + b" " * 4094 + b"]"
    for _ in range(5):  # 20480 bytes: just over the 20000-byte limit, then nothing more
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    status, got, head = _read_response(sock)
    assert status == 413 and got["limit"] == 20000 and b"connection: close" in head
    assert _closed_within(sock, 5)
    sock.close()
    assert server.alive()


def test_a_client_stalling_mid_headers_is_cut_off(server: Server) -> None:
    sock = server.connect()
    started = time.monotonic()
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Len")
    status, got, _ = _read_response(sock)
    took = time.monotonic() - started
    assert status == 408 and "--header-timeout" in got["error"] and 0.8 <= took <= 3.0, took
    assert _closed_within(sock, 2)
    silent = server.connect()  # a connection that never sends a byte is closed too
    assert _closed_within(silent, 3.0)
    sock.close()
    silent.close()
    assert server.alive()


def test_a_client_stalling_mid_body_is_cut_off(server: Server) -> None:
    sock = server.connect()
    started = time.monotonic()
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[{\"a\"")
    status, got, head = _read_response(sock)
    took = time.monotonic() - started
    assert status == 408 and "--body-timeout" in got["error"] and 0.8 <= took <= 3.0, took
    assert "5 bytes arrived" in got["error"] and b"connection: close" in head
    assert _closed_within(sock, 2)
    sock.close()
    assert server.alive()


@pytest.mark.parametrize("head", [b"GET /" + b"a" * 100_000,
                                  b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 100_000])
def test_oversized_headers_get_a_json_431(server: Server, head: bytes) -> None:
    sock = server.connect()
    sock.sendall(head)
    status, got, head = _read_response(sock)
    assert status == 431 and "--max-header-bytes" in got["error"] and b"close" in head
    assert _closed_within(sock, 2)
    sock.close()
    assert server.alive()


def test_malformed_http_gets_a_json_400(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    status, got, _ = _read_response(sock)
    assert status == 400 and "malformed HTTP request" in got["error"] and got["request_id"]
    sock.close()
    assert server.alive()


# ---- load: bursts, stalled sockets, memory ----------------------------------------------------
def test_a_burst_of_150_simultaneous_connections_is_served_without_errors(server: Server) -> None:
    n, barrier, failures = 150, threading.Barrier(150), []

    def one() -> None:
        try:
            barrier.wait(timeout=30)
            sock = server.connect()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _, _ = _read_response(sock)
            sock.close()
            if status != 200:
                failures.append(status)
        except (OSError, threading.BrokenBarrierError) as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []


def test_threads_stay_bounded_with_200_stalled_sockets(server: Server) -> None:
    sockets = []
    try:
        for _ in range(200):
            sock = server.connect()
            sock.sendall(b"GET /health HTTP/1.1\r\nHo")
            sockets.append(sock)
        assert server.alive()
        assert _status_of(server.pid, "Threads") < 64
    finally:
        for sock in sockets:
            sock.close()
    assert server.alive()


@pytest.mark.slow
def test_memory_stays_flat_over_2000_requests(server: Server, records: list) -> None:
    bodies = [json.dumps({"records": records[:1]}).encode(),
              json.dumps({"records": records[:8]}).encode(),
              json.dumps({"records": [{**records[0], "price": "cheap"}]}).encode(),
              b"{not json", b"[" * 5000 + b"]" * 5000, json.dumps({"records": records}).encode()]

    failures: list[int] = []

    def hammer(n: int) -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
        for i in range(n):
            conn.request("POST", "/score", body=bodies[i % len(bodies)])
            response = conn.getresponse()
            response.read()
            if response.status >= 500:
                failures.append(response.status)
            if response.headers.get("connection") == "close":
                conn.close()
        conn.close()

    hammer(300)  # warm-up: allocator pools, caches
    before = _status_of(server.pid, "VmRSS")
    threads = [threading.Thread(target=hammer, args=(500,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = _status_of(server.pid, "VmRSS")
    assert failures == []
    assert after - before < 30 * 1024, (before, after)  # kB
    assert server.alive()


# ---- limits that need their own server ---------------------------------------------------------
def test_requests_over_the_connection_cap_get_a_json_503(serving_world: dict,
                                                         tmp_path: Path) -> None:
    server = Server(serving_world["models"]["din"]["bundle"], "--max-connections", "4",
                    log=tmp_path / "server.log")
    idle = [server.connect() for _ in range(4)]
    try:
        time.sleep(0.2)  # let the server accept them
        status, got, headers = server.call("/health")
        assert status == 503 and "--max-connections" in got["error"]
        assert headers["retry-after"] == "1" and got["request_id"] == headers["x-request-id"]
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert server.alive()
    assert server.stop() == 0


@pytest.mark.slow
def test_sigterm_flips_readiness_drains_the_request_in_flight_and_exits_0(
        serving_world: dict, records: list, tmp_path: Path) -> None:
    server = Server(serving_world["models"]["din"]["bundle"], "--drain-delay", "2",
                    "--body-timeout", "30", log=tmp_path / "server.log")
    body = json.dumps({"records": [records[i % len(records)] for i in range(1024)]}).encode()
    sock = server.connect()  # a max-size batch, half sent when SIGTERM arrives
    sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    sock.sendall(body[:len(body) // 2])
    time.sleep(0.2)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    status, got, headers = server.call("/ready")  # during the drain delay: still accepting
    assert status == 503 and "draining" in got["error"] and headers["connection"] == "close"
    assert server.alive()
    deadline = time.monotonic() + 15  # past the delay the port closes; the request stays
    while time.monotonic() < deadline:
        try:
            server.connect().close()
        except ConnectionRefusedError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the port stayed open after the drain delay")
    sock.sendall(body[len(body) // 2:])
    status, got, head = _read_response(sock, timeout=30)
    assert status == 200 and len(got["scores"]) == 1024 and b"connection: close" in head
    sock.close()
    assert server.process.wait(timeout=30) == 0


@pytest.mark.slow
def test_workers_share_the_port_and_stop_together(serving_world: dict, records: list,
                                                  tmp_path: Path) -> None:
    server = Server(serving_world["models"]["din"]["bundle"], "--workers", "2",
                    log=tmp_path / "server.log")
    for _ in range(6):
        sock = server.connect()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_response(sock)[0] == 200
        sock.close()
    status, got, _ = server.call("/score", {"records": records[:3]})
    assert status == 200 and len(got["scores"]) == 3
    workers = [pid for pid in _children(server.pid)
               if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2
    assert server.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


# ---- the command line ---------------------------------------------------------------------------
def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recflow.serving", *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.slow
def test_check_scores_the_input_example_and_exits(serving_world: dict, tmp_path: Path) -> None:
    bundle = serving_world["models"]["din"]["bundle"]
    done = _run(str(bundle), "--check")
    assert done.returncode == 0, done.stderr
    checked = json.loads(done.stdout)
    assert checked["model"] == "din" and checked["verified"] is True and checked["records"] > 0
    unverified = tmp_path / "din"
    shutil.copytree(bundle, unverified)
    manifest = json.loads((unverified / "manifest.json").read_text())
    del manifest["sha256"]
    (unverified / "manifest.json").write_text(json.dumps(manifest))
    refused = _run(str(unverified), "--check")
    assert refused.returncode == 1 and refused.stderr.startswith("error: ")
    assert refused.stderr.count("\n") == 1 and "--allow-unverified" in refused.stderr
    assert _run(str(unverified), "--check", "--allow-unverified").returncode == 0
    missing = _run(str(tmp_path / "nope"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
    assert missing.stderr.count("\n") == 1


def test_a_taken_port_is_an_error_on_one_line(server: Server, serving_world: dict) -> None:
    done = _run(str(serving_world["models"]["din"]["bundle"]), "--port", str(server.port))
    assert done.returncode == 1 and done.stderr.startswith("error: ")
    assert done.stderr.count("\n") == 1
    assert os.path.exists(f"/proc/{server.pid}")
