"""Semantic-ID benchmarks: tokenizer fit time (100k items x 384 dims) and decoding throughput.

    python benchmarks/bench_semantic_ids.py [--items 100000] [--dim 384] [--users 512]

Prints tokenizer fit seconds (RQ-KMeans 3 x 256) and users/s of TIGER constrained
beam search (beam 10) vs SASRec full-catalogue scoring, on untrained models of the
default sizes (throughput does not depend on the weights).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recflow.models.retrieval import RETRIEVAL_MODELS, RetrievalData
from recflow.registry import TOKENIZERS
from recflow.tokenization import disambiguate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.items, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    start = time.perf_counter()
    tok = TOKENIZERS.create("rq_kmeans", params={"levels": 3, "codebook_size": 256,
                                                 "max_iter": 20}).fit(x)
    print(f"rq_kmeans 3x256 fit on {args.items}x{args.dim}: {time.perf_counter() - start:.1f}s")
    catalogue = 5000
    codes = tok.encode(x[:catalogue])
    sids = np.vstack([np.zeros((1, 4), dtype=np.int64), disambiguate(codes)])
    seqs = [rng.integers(1, catalogue + 1, 12) for _ in range(64)]
    data = RetrievalData(n_items=catalogue, train_sequences=seqs, semantic_ids=sids)
    histories = [rng.integers(1, catalogue + 1, 20) for _ in range(args.users)]
    for name, params in (("sasrec", {"epochs": 1}), ("tiger", {"epochs": 1, "beam_size": 10})):
        model = RETRIEVAL_MODELS.create(name, params=params).fit(data)
        start = time.perf_counter()
        model.recommend(histories, 10)
        print(f"{name}: {args.users / (time.perf_counter() - start):.0f} users/s (top 10)")


if __name__ == "__main__":
    main()
