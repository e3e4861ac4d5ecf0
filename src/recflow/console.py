"""`recflow` command line: data utilities around the Kedro project (not `cli.py`: Kedro reserves that name for project commands).

Pipelines run with `kedro run --pipelines=NAME`; this CLI makes data and serves models.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="write the synthetic data set (see docs/data.md)",
                   add_help=False)
    sub.add_parser("fetch-movielens", help="extract MovieLens-100K from the recbole wheel",
                   add_help=False)
    listing = sub.add_parser("list", help="registered components and where they come from")
    listing.add_argument("kind", nargs="?", default=None, choices=sorted(_registries()))
    listing.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'dcn*'")
    show = sub.add_parser("show", help="a component's parameter schema with defaults")
    show.add_argument("kind", choices=sorted(_registries()))
    show.add_argument("name")
    sub.add_parser("serve", help="serve an exported bundle over HTTP (python -m recflow.serving)",
                   add_help=False)
    sub.add_parser("benchmark", help="run a grid (datasets x protocols x models x seeds) "
                   "into one table", add_help=False)
    sub.add_parser("scaffold", help="write conf/ENV for your own data files (docs/byod.md)",
                   add_help=False)
    sub.add_parser("example-data", help="write a small criteo / reviews / retail dataset",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "list":
        return _list(args.kind, args.pattern)
    if args.command == "show":
        return _show(args.kind, args.name)
    if args.command == "serve":
        from recflow.serving.__main__ import main as serve

        return serve(rest)
    if args.command == "benchmark":
        from recflow.evaluation.benchmark import main as benchmark

        return benchmark(rest)
    if args.command == "scaffold":
        from recflow.datasets.scaffold import main as scaffold

        return scaffold(rest)
    if args.command == "example-data":
        from recflow.datasets.examples import main as example_data

        return example_data(rest)
    if args.command == "generate":
        from recflow.datasets.synthetic import main as generate

        return generate(rest)
    from recflow.datasets.movielens import main as fetch

    return fetch(rest)


def _registries() -> dict:
    from recflow.registry import ALL

    return {r.kind: r for _, r in ALL}


def _list(kind: str | None, pattern: str) -> int:
    registries = _registries()
    rows = [(r.kind, c.name, c.source, c.summary)
            for k, r in sorted(registries.items()) if kind in (None, k)
            for c in r if c.name in r.list(pattern)]
    for row in rows:
        sys.stdout.write("{:<17} {:<22} {:<24} {}\n".format(*row))
    return 0 if rows else 1


def _show(kind: str, name: str) -> int:
    from recflow.registry import RegistryError, schema_fields

    try:
        component = _registries()[kind].get(name)
    except RegistryError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(f"{_registries()[kind].singular} '{component.name}' "
                     f"from {component.source}: {component.summary}\n")
    for field, annotation, default in schema_fields(component.params):
        sys.stdout.write(f"  {field}: {annotation} = {default!r}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
