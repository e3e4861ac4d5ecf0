"""Semantic-ID benchmarks: tokenizer fit time (100k items x 384 dims) and decoding throughput.

    python benchmarks/bench_semantic_ids.py [--items 100000] [--dim 384] [--users 1024]

1. Fit time of RQ-KMeans (3 x 256, scikit-learn k-means per level) and RQ-VAE
   (3 x 256, default epochs) on unit-norm random vectors of the MiniLM size, and
   the encode time of the fitted tokenizer (cold start: new items, no refit).
2. Users/s of TIGER trie-constrained beam search (beam 10, KV-cached; with and
   without the cold-item search) vs SASRec full-catalogue scoring + top-10, both
   on a 5,000-item catalogue with 20-item histories, in the same run. Throughput
   does not depend on the weights, so the models train for one epoch only.

Writes benchmarks/results/semantic_ids.json and the `## Semantic IDs` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from _docs import machine_note, write_section
from recflow.models.retrieval import RETRIEVAL_MODELS, RetrievalData
from recflow.registry import TOKENIZERS
from recflow.tokenization import disambiguate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "semantic_ids.json"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "Semantic IDs"


def _timed(fn):  # noqa: ANN001, ANN202  (a zero-argument callable -> (result, seconds))
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def tokenizer_fits(items: int, dim: int, rng: np.random.Generator) -> list[dict]:
    x = rng.normal(size=(items, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    new = x[: items // 10] + 0.01 * rng.normal(size=(items // 10, dim)).astype(np.float32)
    rows = []
    for name, params in (("rq_kmeans", {"levels": 3, "codebook_size": 256}),
                         ("rq_vae", {"levels": 3, "codebook_size": 256})):
        tok, fit_s = _timed(lambda n=name, p=params: TOKENIZERS.create(n, params=p).fit(x))
        _, enc_s = _timed(lambda t=tok: t.encode(new))
        rows.append({"tokenizer": name, "items": items, "dim": dim, "fit_seconds": round(fit_s, 1),
                     "encode_items_per_second": round(len(new) / enc_s)})
    return rows


def decoding(users: int, rng: np.random.Generator, catalogue: int = 5000) -> list[dict]:
    codes = np.column_stack([rng.integers(0, 256, catalogue) for _ in range(3)])
    sids = np.vstack([np.zeros((1, 4), dtype=np.int64), disambiguate(codes)])
    seqs = [rng.integers(1, catalogue + 1, 21) for _ in range(256)]
    cold = rng.choice(np.arange(1, catalogue + 1), catalogue // 20, replace=False)
    data = RetrievalData(n_items=catalogue, train_sequences=seqs, semantic_ids=sids,
                         cold_items=cold)
    histories = [rng.integers(1, catalogue + 1, 20) for _ in range(users)]
    rows = []
    for label, name, params in (
        ("SASRec (full-catalogue scores + top-10)", "sasrec", {"epochs": 1}),
        ("TIGER beam 10, no cold search", "tiger", {"epochs": 1, "beam_size": 10,
                                                    "cold_share": 0.0}),
        ("TIGER beam 10 + cold-item search", "tiger", {"epochs": 1, "beam_size": 10}),
    ):
        model = RETRIEVAL_MODELS.create(name, params=params).fit(data)
        model.recommend(histories[:64], 10)  # warm-up
        _, seconds = _timed(lambda m=model: m.recommend(histories, 10))
        rows.append({"model": label, "users": users, "users_per_second": round(users / seconds)})
    base = rows[0]["users_per_second"]
    for row in rows:
        row["vs_sasrec"] = round(row["users_per_second"] / base, 3)
    return rows


def markdown(result: dict) -> str:
    lines = [f"## {SECTION}", "", "`python benchmarks/bench_semantic_ids.py` "
             f"({result['machine']}, torch threads {result['threads']}).", "",
             "| tokenizer | items × dim | fit s | encode items/s (cold start) |",
             "|---|---|---|---|"]
    lines += [f"| {r['tokenizer']} | {r['items']:,} × {r['dim']} | {r['fit_seconds']} | "
              f"{r['encode_items_per_second']:,} |" for r in result["tokenizers"]]
    lines += ["", "| retrieval, 5,000 items, 20-item histories | users/s | vs SASRec |",
              "|---|---|---|"]
    lines += [f"| {r['model']} | {r['users_per_second']:,} | {r['vs_sasrec']:.2f}× |"
              for r in result["decoding"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--users", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    result = {"machine": machine_note(), "threads": args.threads,
              "decoding": decoding(args.users, rng),
              "tokenizers": tokenizer_fits(args.items, args.dim, rng)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    section = markdown(result)
    if not args.no_doc:
        write_section(DOC, SECTION, section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
