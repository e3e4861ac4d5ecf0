"""Load test of the HTTP scoring service: requests/s and latency per (clients, records/request).

    python benchmarks/bench_serving_http.py                      # builds two small bundles first
    python benchmarks/bench_serving_http.py --bundle data/07_model_output/serving/din
    python benchmarks/bench_serving_http.py --seconds 1          # smoke run

Starts `python -m recflow.serving BUNDLE --port 0` in its own process (extra flags with
`--server-args "--workers 2"`), then for every cell of `--clients` x `--batches` runs a
closed loop: C keep-alive connections, each sending POST /score with B raw records and
waiting for the answer before the next, for `--seconds` seconds (after a short warm-up).
The client is one asyncio process over raw sockets with pre-encoded requests, so it costs
far less per request than the server; it still shares the machine's cores with it, which
the table's load average note records.

Reported per cell: requests/s, records/s, p50/p90/p99/max latency (ms), errors (non-200
answers and broken connections). Raw JSON: `--out` (benchmarks/results/serving_http.json)
and the `## HTTP serving` section of docs/benchmarks.md (`--no-doc` to leave it).
Without --bundle, `tests/serving_world.py` builds the test suite's DIN bundle in a temp dir
(needs torch); with --bundle the records come from `--records FILE` (a JSON list of raw
records) or else the bundle's `input_example.json`, repeated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _docs import machine_note, write_section

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks/results/serving_http.json"
DOC = REPO / "docs/benchmarks.md"


# ---- the client ----------------------------------------------------------------------------
class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, wait for its complete answer, repeat."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end]).lower()
        match = re.search(rb"content-length: *(\d+)", head)
        length = int(match.group(1)) if match else 0
        if len(self.buffer) >= end + 4 + length:
            status = int(head[9:12])
            del self.buffer[:end + 4 + length]
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))
        if not self.lost.done():
            self.lost.set_result(None)

    async def call(self, request: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return await self.waiter


async def _closed_loop(host: str, port: int, request: bytes, clients: int, seconds: float,
                       warmup: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    start_measuring = loop.time() + warmup
    stop = start_measuring + seconds

    async def client() -> None:
        nonlocal errors
        connection: _Connection | None = None
        while loop.time() < stop:
            try:
                if connection is None:
                    _, connection = await loop.create_connection(_Connection, host, port)
                began = time.perf_counter()
                status = await asyncio.wait_for(connection.call(request), 30)
                took = time.perf_counter() - began
            except (OSError, ConnectionError, TimeoutError):
                errors += loop.time() >= start_measuring
                connection = None
                continue
            if loop.time() >= start_measuring:
                if status == 200:
                    latencies.append(took)
                else:
                    errors += 1
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    began = loop.time()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = loop.time() - max(began + warmup, start_measuring)
    ms = np.asarray(latencies) * 1e3 if latencies else np.full(1, np.nan)
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "rps": len(latencies) / elapsed,
            **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)},
            "max_ms": float(ms.max())}


def load_test(host: str, port: int, body: bytes, clients: int, seconds: float,
              warmup: float = 0.5) -> dict[str, Any]:
    request = (f"POST /score HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json"
               f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency on Linux
        runner = asyncio.run
    return runner(_closed_loop(host, port, request, clients, seconds, warmup))


# ---- the server ----------------------------------------------------------------------------
def start_server(bundle: Path, extra: list[str], log: Path) -> tuple[subprocess.Popen, str, int]:
    """The server as deployed (one INFO line per request, to a file), on a free port."""
    command = [sys.executable, "-m", "recflow.serving", str(bundle), "--port", "0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    line = process.stdout.readline() if process.stdout else ""
    match = re.search(r"http://([\d.]+):(\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return process, match.group(1), int(match.group(2))


def stop_server(process: subprocess.Popen) -> int:
    process.terminate()
    return process.wait(timeout=60)


def records_for(args: argparse.Namespace, workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    if args.bundle:
        bundle = Path(args.bundle)
        source = Path(args.records) if args.records else bundle / "input_example.json"
        return bundle, json.loads(source.read_text())
    sys.path.insert(0, str(REPO))
    from tests.serving_world import build_serving_world

    from recflow.serving import Scorer

    world = build_serving_world(workdir)
    bundle = world["models"]["din"]["bundle"]
    columns = list(Scorer.from_bundle(bundle).raw_schema)
    return bundle, json.loads(world["records"][columns].head(4096).to_json(orient="records"))


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| records/request | clients | requests/s | records/s | p50 ms | p90 ms | p99 ms "
             "| max ms | errors |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['clients']} | {r['rps']:,.0f} | "
                     f"{r['rps'] * r['batch']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']} |")
    return "\n".join(lines)


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", help="serving bundle (default: build the test DIN bundle)")
    parser.add_argument("--records", help="JSON list of raw records (default: the bundle's "
                                          "input_example.json)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell (default 5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="per cell, not measured")
    parser.add_argument("--server-args", default="",
                        help='extra flags for the server, e.g. "--workers 2 --threads 1"')
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-doc", dest="doc", action="store_false",
                        help="do not replace the HTTP serving section of docs/benchmarks.md")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_serving_http_") as tmp:
        bundle, records = records_for(args, Path(tmp))
        extra = shlex.split(args.server_args)
        if max(args.batches) > 1024 and "--max-batch" not in extra:
            extra += ["--max-batch", str(max(args.batches))]
        load_before, note = os.getloadavg()[0], machine_note()
        process, host, port = start_server(bundle, extra, Path(tmp) / "server.log")
        rows = []
        try:
            for batch in args.batches:
                sample = [records[i % len(records)] for i in range(batch)]
                body = json.dumps({"records": sample}).encode()
                for clients in args.clients:
                    row = load_test(host, port, body, clients, args.seconds, args.warmup)
                    row.update(batch=batch, clients=clients, body_bytes=len(body),
                               load_avg_1m=round(os.getloadavg()[0], 2))
                    rows.append(row)
                    print(f"b={batch:<4} c={clients:<3} {row['rps']:8,.0f} req/s  "
                          f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
                          f"errors {row['errors']}", flush=True)
        finally:
            exit_code = stop_server(process)
    command = "python benchmarks/bench_serving_http.py " + " ".join(argv or sys.argv[1:])
    section = (f"## HTTP serving\n\n`{command.strip()}` on {note}; server flags: "
               f"`{' '.join(extra) or '(defaults)'}`; {args.seconds:g} s per cell after a "
               f"{args.warmup:g} s warm-up, closed loop, keep-alive connections, the client in "
               "one asyncio process on the same machine. Raw JSON: "
               f"`{_relative(args.out)}`.\n\n{table(rows)}\n")
    print("\n" + section)
    result = {"machine": {"cpu": note, "load_avg_1m_before": load_before,
                          "python": platform.python_version()},
              "bundle": str(bundle), "server_args": extra, "seconds": args.seconds,
              "server_exit_code": exit_code, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.doc:
        write_section(DOC, "HTTP serving", section)
    print(f"wrote {args.out}" + (f" and the HTTP serving section of {DOC}" if args.doc else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
