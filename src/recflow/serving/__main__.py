"""`python -m recflow.serving BUNDLE` (or `--model M.onnx --spec feature_spec.json`): serve over HTTP.

Also `recflow serve ...`. `--check` loads the model, scores its input example and exits
(0, or 1 with the error on one line) without serving.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from recflow.serving.app import Limits
from recflow.serving.server import (
    ModelSource,
    ServerOptions,
    bind,
    one_line,
    run,
    supervise,
    url,
    warm_up,
)

_LIMITS, _SERVER = Limits(), ServerOptions()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    source = ModelSource(bundle=args.bundle, model=args.model, spec=args.spec, int8=args.int8,
                         threads=args.threads, allow_unverified=args.allow_unverified)
    try:
        logging.basicConfig(level=args.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        limits = Limits(max_body_bytes=args.max_body_bytes, max_batch=args.max_batch,
                        max_json_depth=args.max_json_depth, body_timeout=args.body_timeout,
                        inline_max_records=args.inline_max_records,
                        score_threads=args.score_threads)
        options = ServerOptions(
            host=args.host, port=args.port, workers=args.workers,
            header_timeout=args.header_timeout, max_header_bytes=args.max_header_bytes,
            keep_alive=args.keep_alive, max_connections=args.max_connections,
            backlog=args.backlog, graceful_timeout=args.graceful_timeout,
            drain_delay=args.drain_delay)
        scorer = source.load()
        if args.check:
            sys.stdout.write(json.dumps(scorer.check()) + "\n")
            return 0
        warm_up(scorer)
        sock = bind(options)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: {one_line(exc)}\n")
        return 1

    name = scorer.name

    def announce() -> None:
        # tests and benchmarks parse this line for the bound port
        sys.stdout.write(f"recflow.serving: model '{name}' on {url(sock)}\n")
        sys.stdout.flush()

    if options.workers == 1:
        run(scorer, sock, limits, options, on_started=announce)
        return 0
    del scorer  # each worker loads its own
    return supervise(source, sock, limits, options, on_started=announce)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recflow.serving",
        description="Serve a recflow model over HTTP (uvicorn): GET /health, GET /ready, "
                    "GET /metadata, POST /score. See docs/serving.md.")
    parser.add_argument("bundle", nargs="?",
                        help="serving bundle directory (data/07_model_output/serving/NAME)")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="an exported .onnx file (instead of a bundle)")
    model.add_argument("--spec", help="the feature_spec.json that goes with --model")
    model.add_argument("--int8", action="store_true", help="serve the bundle's int8 model")
    model.add_argument("--threads", type=int, default=None,
                       help="onnxruntime intra-op threads (default: onnxruntime's)")
    model.add_argument("--allow-unverified", action="store_true",
                       help="load a bundle whose manifest has no checksums")
    model.add_argument("--check", action="store_true",
                       help="score the bundle's input example, print the result and exit")
    net = parser.add_argument_group("server")
    net.add_argument("--host", default=_SERVER.host)
    net.add_argument("--port", type=int, default=_SERVER.port, help="0 picks a free port")
    net.add_argument("--workers", type=int, default=_SERVER.workers,
                     help="processes sharing the port, each with its own model (default 1)")
    net.add_argument("--max-connections", type=int, default=_SERVER.max_connections,
                     help="open connections (or requests in flight) beyond which requests "
                          "get 503 (default %(default)s)")
    net.add_argument("--backlog", type=int, default=_SERVER.backlog,
                     help="connections the kernel queues before accepting (default %(default)s)")
    net.add_argument("--header-timeout", type=float, default=_SERVER.header_timeout,
                     help="seconds for a request's headers to arrive (default %(default)s)")
    net.add_argument("--max-header-bytes", type=int, default=_SERVER.max_header_bytes,
                     help="largest request line + headers; more gets 431 (default %(default)s)")
    net.add_argument("--keep-alive", type=float, default=_SERVER.keep_alive,
                     help="seconds an idle keep-alive connection stays open (default %(default)s)")
    net.add_argument("--graceful-timeout", type=float, default=_SERVER.graceful_timeout,
                     help="on shutdown, seconds to let requests in flight finish "
                          "(default %(default)s)")
    net.add_argument("--drain-delay", type=float, default=_SERVER.drain_delay,
                     help="on SIGTERM, seconds to keep serving with /ready at 503 before "
                          "closing the port (default %(default)s)")
    net.add_argument("--log-level", default="INFO",
                     help="INFO logs one line per request (default %(default)s)")
    req = parser.add_argument_group("requests")
    req.add_argument("--max-batch", type=int, default=_LIMITS.max_batch,
                     help="most records per request; more get 413 (default %(default)s)")
    req.add_argument("--max-body-bytes", type=int, default=_LIMITS.max_body_bytes,
                     help="largest request body; more gets 413 (default %(default)s)")
    req.add_argument("--max-json-depth", type=int, default=_LIMITS.max_json_depth,
                     help="deepest JSON nesting; deeper gets 400 (default %(default)s)")
    req.add_argument("--body-timeout", type=float, default=_LIMITS.body_timeout,
                     help="seconds for a request body to arrive; slower gets 408 "
                          "(default %(default)s)")
    req.add_argument("--inline-max-records", type=int, default=_LIMITS.inline_max_records,
                     help="batches up to this size are scored on the event loop, larger ones "
                          "in a thread pool (default %(default)s)")
    req.add_argument("--score-threads", type=int, default=_LIMITS.score_threads,
                     help="threads scoring larger batches (default %(default)s)")
    return parser


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if bool(args.bundle) == bool(args.model):
        parser.error("give either a BUNDLE directory or --model (with --spec)")
    if args.model and not args.spec:
        parser.error("--model needs --spec (the feature_spec.json it was trained on)")


if __name__ == "__main__":
    raise SystemExit(main())
