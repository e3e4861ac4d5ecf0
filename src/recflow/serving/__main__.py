"""`python -m recflow.serving BUNDLE` (or `--model M.onnx --spec feature_spec.json`): serve over HTTP."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from recflow.serving.scorer import Scorer
from recflow.serving.service import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES, make_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recflow.serving",
        description="Serve a recflow model over HTTP: GET /health, GET /metadata, POST /score.")
    parser.add_argument("bundle", nargs="?",
                        help="serving bundle directory (data/07_model_output/serving/NAME)")
    parser.add_argument("--model", help="an exported .onnx file (instead of a bundle)")
    parser.add_argument("--spec", help="the feature_spec.json that goes with --model")
    parser.add_argument("--int8", action="store_true", help="serve the bundle's int8 model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="most records per request (larger batches get 413)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime intra-op threads (default: onnxruntime's)")
    parser.add_argument("--asgi", action="store_true",
                        help="serve the Starlette app with uvicorn (pip install 'recflow[serve]')")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if bool(args.bundle) == bool(args.model):
        parser.error("give either a BUNDLE directory or --model (with --spec)")
    if args.model and not args.spec:
        parser.error("--model needs --spec (the feature_spec.json it was trained on)")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        scorer = (Scorer.from_bundle(args.bundle, int8=args.int8, threads=args.threads)
                  if args.bundle else Scorer(args.model, args.spec, threads=args.threads))
        if args.asgi:
            return _serve_asgi(scorer, args)
        server = make_server(scorer, args.host, args.port, max_batch=args.max_batch,
                             max_body_bytes=args.max_body_bytes)
    except (OSError, ValueError, ImportError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.write(f"recflow.serving: model '{scorer.name}' on {server.url}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _serve_asgi(scorer: Scorer, args: argparse.Namespace) -> int:
    from recflow.serving.asgi import create_app

    app = create_app(scorer, max_batch=args.max_batch, max_body_bytes=args.max_body_bytes)
    import uvicorn

    sys.stdout.write(f"recflow.serving (asgi): model '{scorer.name}' on "
                     f"http://{args.host}:{args.port}\n")
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
