"""Run the scoring app on uvicorn: the socket, the connection limits, signals and workers.

* The listening socket is bound here with a deep backlog (2048 by default), so a burst
  of connections queues in the kernel instead of being reset; port 0 picks a free port.
* Before it listens, each process loads the model and runs its self-check (`warm_up`):
  a bundle that cannot score its own input example never takes traffic.
* SIGTERM flips `/ready` to 503 at once; `--drain-delay` seconds later (time for a load
  balancer to notice) the server stops accepting, lets the requests in flight finish (at
  most `--graceful-timeout` seconds) and the process exits 0. uvicorn's own handler
  re-raises the signal once drained (exit status -15); this one does not. SIGINT skips
  the delay.
* `--workers N` spawns N processes on the one socket, each loading the model itself; the
  parent forwards SIGTERM/SIGINT and replaces a worker that dies.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import queue
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from recflow.serving.app import Health, Limits, create_app
from recflow.serving.protocol import ScoringProtocol
from recflow.serving.scorer import Scorer

logger = logging.getLogger("recflow.serving")


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a bundle directory, or an .onnx file with its spec."""

    bundle: str | None = None
    model: str | None = None
    spec: str | None = None
    int8: bool = False
    threads: int | None = None
    allow_unverified: bool = False

    def load(self) -> Scorer:
        if self.bundle:
            return Scorer.from_bundle(self.bundle, int8=self.int8, threads=self.threads,
                                      allow_unverified=self.allow_unverified)
        return Scorer(self.model, self.spec, threads=self.threads)


@dataclass(frozen=True)
class ServerOptions:
    """Connection-level settings (each a CLI flag of `python -m recflow.serving`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    keep_alive: float = 15.0
    max_connections: int = 1024
    backlog: int = 2048
    graceful_timeout: float = 30.0
    drain_delay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("workers", "max_connections", "backlog", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("header_timeout", "keep_alive"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def warm_up(scorer: Scorer) -> dict[str, Any]:
    """Score before serving: the bundle's input example (`Scorer.check`), else one empty record.

    A model given as --model/--spec has no example; an all-missing record still runs
    every transform and the graph once.
    """
    if scorer.input_example:
        return scorer.check()
    scorer.score([dict.fromkeys(scorer.raw_schema)])
    return {"model": scorer.name, "records": 1, "verified": False}


def bind(options: ServerOptions) -> socket.socket:
    """The listening socket (OSError if the address is taken)."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening one says TCP (uvloop always does); without it Nagle delays answers ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((options.host, options.port))
        sock.listen(options.backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ScoringServer(uvicorn.Server):
    """uvicorn's Server with readiness, a drain delay and a clean exit on SIGTERM."""

    def __init__(self, config: uvicorn.Config, health: Health, *, drain_delay: float,
                 on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.health, self.drain_delay, self.on_started = health, drain_delay, on_started
        self._stop_at: float | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.health.draining = True  # /ready answers 503 from now on
        if sig == signal.SIGTERM and self.drain_delay > 0 and self._stop_at is None:
            self._stop_at = time.monotonic() + self.drain_delay  # on_tick stops the server
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()


def run(scorer: Scorer, sock: socket.socket, limits: Limits, options: ServerOptions,
        on_started: Callable[[], None]) -> None:
    """Serve `scorer` on `sock` until SIGTERM/SIGINT, then drain (one process)."""
    _raise_fd_limit(options.max_connections + 64)
    health = Health()
    app = create_app(scorer, limits, health)
    protocol = ScoringProtocol.configured(header_timeout=options.header_timeout,
                                          max_header_bytes=options.max_header_bytes,
                                          max_connections=options.max_connections,
                                          busy_app=app.busy)
    config = uvicorn.Config(
        app, http=protocol, ws="none", lifespan="off", interface="asgi3",
        log_config=None, access_log=False,  # one line per request comes from the app
        proxy_headers=False, server_header=False, backlog=options.backlog,
        timeout_keep_alive=options.keep_alive,
        timeout_graceful_shutdown=options.graceful_timeout)
    health.ready = True  # the caller has warmed the scorer up
    # the model, pandas, onnxruntime: ~80k long-lived objects that a full collection would
    # walk for ~40 ms, stalling every request in flight; frozen, collections skip them
    gc.collect()
    gc.freeze()
    ScoringServer(config, health, drain_delay=options.drain_delay,
                  on_started=on_started).run(sockets=[sock])


def supervise(source: ModelSource, sock: socket.socket, limits: Limits, options: ServerOptions,
              on_started: Callable[[], None]) -> int:
    """`options.workers` processes serving `sock`; returns once they have all drained."""
    context = multiprocessing.get_context("spawn")
    started: Any = context.Queue()
    level = logging.getLogger().getEffectiveLevel()

    def spawn() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_worker, args=(source, sock, limits, options, started,
                                                        level), daemon=False)
        process.start()
        return process

    stop: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, frame: stop.append(sig))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    workers = [spawn() for _ in range(options.workers)]
    try:
        ready = 0
        while ready < len(workers):
            try:
                started.get(timeout=0.5)
                ready += 1
            except queue.Empty:
                if stop or any(w.exitcode is not None for w in workers):
                    stop.append(signal.SIGTERM)
                    sys.stderr.write("error: a worker failed to start\n")
                    return 1
        on_started()
        while not stop:
            time.sleep(0.2)
            for i, worker in enumerate(workers):
                if worker.exitcode is not None and not stop:
                    logger.error("worker %s exited with %s; starting another in 1 s",
                                 worker.pid, worker.exitcode)
                    time.sleep(1.0)  # no tight loop when every start crashes
                    workers[i] = spawn()
        return 0
    finally:
        for worker in workers:  # SIGTERM whatever arrived: Ctrl+C already reached them all
            if worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.join(options.drain_delay + options.graceful_timeout + 5)
            if worker.exitcode is None:
                worker.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(source: ModelSource, sock: socket.socket, limits: Limits, options: ServerOptions,
            started: Any, level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        scorer = source.load()
        warm_up(scorer)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: {one_line(exc)}\n")
        raise SystemExit(1) from None
    run(scorer, sock, limits, options, on_started=lambda: started.put(os.getpid()))


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _raise_fd_limit(needed: int) -> None:
    """Every connection is a file descriptor: lift the soft limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
