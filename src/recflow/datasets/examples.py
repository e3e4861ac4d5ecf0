"""Small datasets of three common shapes, for the bring-your-own-data guide and its tests.

`recflow example-data SHAPE --out DIR` writes them as the files a user would have:

* ``criteo``: a CTR log already split into ``train.csv`` / ``valid.csv`` / ``test.csv``:
  ``label``, numeric ``I1..I13`` and hex-token categoricals ``C1..C26``, both with gaps;
  no user, item or time. The label carries *pairwise* interactions (C1 x C2, C3 x I1)
  whose marginals are flat, so a crossing model (dcnv2) beats logistic regression.
* ``reviews``: an Amazon-reviews-shaped log ``reviews.csv`` (string reviewer ids and
  ASINs, ratings 1-5, unix times, no purchase) with ``items.csv`` (category, brand,
  price with gaps, title).
* ``retail``: a log ``events.parquet`` with ISO-8601 times, a ``users.csv`` that lacks
  some users, and ``items.csv``.

Vectorised numpy; seeded, so a shape and size always give the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SHAPES = ("criteo", "reviews", "retail")


def _tokens(rng: np.random.Generator, n: int, cardinality: int, missing: float) -> np.ndarray:
    """Zipf-ish 8-hex-char tokens with `missing` share of gaps (None)."""
    ids = np.minimum(rng.zipf(1.3, n) - 1, cardinality - 1)
    vocab = np.array([f"{v:08x}" for v in rng.choice(2**31, cardinality, replace=False)],
                     dtype=object)
    out = vocab[ids]
    out[rng.random(n) < missing] = None
    return out


def criteo(rows: int = 30_000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """train / valid / test frames of a Criteo-shaped log (80 / 10 / 10)."""
    rng = np.random.default_rng(seed)
    frame = {}
    for i in range(1, 14):
        x = np.floor(rng.lognormal(1.0, 1.2, rows))
        x[rng.random(rows) < 0.1] = np.nan
        frame[f"I{i}"] = x
    cards = [8, 8, 6, *(int(c) for c in rng.integers(20, 2_000, 23))]
    for i, card in enumerate(cards, start=1):
        frame[f"C{i}"] = _tokens(rng, rows, card, 0.05 if i > 3 else 0.0)
    frame = pd.DataFrame(frame)
    # planted signal: two pairwise interactions with (nearly) flat marginals + weak main effects
    c1 = pd.factorize(frame["C1"])[0] % 8
    c2 = pd.factorize(frame["C2"])[0] % 8
    table = rng.normal(0, 1.6, (8, 8))
    table -= table.mean(axis=0, keepdims=True) + table.mean(axis=1, keepdims=True) - table.mean()
    c3 = pd.factorize(frame["C3"])[0] % 6
    i1 = np.log1p(np.nan_to_num(frame["I1"].to_numpy(), nan=1.0))
    slope = np.linspace(-1.2, 1.2, 6)[c3]
    main = 0.3 * np.log1p(np.nan_to_num(frame["I2"].to_numpy(), nan=0.0))
    logit = -1.6 + table[c1, c2] + slope * (i1 - i1.mean()) + main - main.mean()
    frame.insert(0, "label", (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64))
    cut = [int(rows * 0.8), int(rows * 0.9)]
    return {"train": frame.iloc[:cut[0]], "valid": frame.iloc[cut[0]:cut[1]],
            "test": frame.iloc[cut[1]:]}


def _interactions(rng: np.random.Generator, rows: int, users: int, items: int,
                  start: int, span: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, time) with per-user taste: users prefer items of their group."""
    user = np.minimum(rng.zipf(1.4, rows) - 1, users - 1)
    group = user % 10
    own = rng.random(rows) < 0.7
    item = np.where(own, (rng.integers(0, items // 10, rows) * 10 + group) % items,
                    rng.integers(0, items, rows))
    time = start + np.sort(rng.integers(0, span, rows))
    return user, item, time


def reviews(rows: int = 20_000, users: int = 1_500, items: int = 600,
            seed: int = 0) -> dict[str, pd.DataFrame]:
    """An Amazon-reviews-shaped log with string ids and an items table with gaps."""
    rng = np.random.default_rng(seed)
    user, item, time = _interactions(rng, rows, users, items, 1_400_000_000, 86_400 * 400)
    quality = rng.normal(0, 1, items)
    rating = np.clip(np.round(3.6 + quality[item] + rng.normal(0, 0.9, rows)), 1, 5)
    asin = np.array([f"B{v:09d}" for v in rng.choice(10**8, items, replace=False)],
                    dtype=object)
    reviewer = np.array([f"A{v:013X}" for v in rng.choice(10**12, users, replace=False)],
                        dtype=object)
    log = pd.DataFrame({"reviewerID": reviewer[user], "asin": asin[item],
                        "overall": rating.astype(np.int64), "unixReviewTime": time})
    price = np.round(rng.lognormal(3, 0.8, items), 2)
    price[rng.random(items) < 0.15] = np.nan
    table = pd.DataFrame({
        "asin": asin,
        "category": np.array([f"cat_{g}" for g in range(10)])[np.arange(items) % 10],
        "brand": np.array([f"brand_{b}" for b in range(40)], dtype=object)[
            rng.integers(0, 40, items)],
        "price": price,
        "title": [f"product {i} of cat_{i % 10}" for i in range(items)],
    })
    return {"reviews": log, "items": table}


def retail(rows: int = 20_000, users: int = 1_200, items: int = 400,
           seed: int = 0) -> dict[str, pd.DataFrame]:
    """A retail log with ISO-8601 times and a users table missing some users."""
    rng = np.random.default_rng(seed)
    user, item, time = _interactions(rng, rows, users, items, 1_700_000_000, 86_400 * 120)
    segment = rng.integers(0, 4, users)
    affinity = rng.normal(0, 1, (4, 10))
    logit = -1.2 + affinity[segment[user], item % 10]
    bought = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    stamps = pd.to_datetime(time, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    log = pd.DataFrame({"customer": user + 1000, "sku": item, "event_time": stamps,
                        "bought": bought, "channel": np.array(["web", "app", "store"])[
                            rng.integers(0, 3, rows)]})
    known = rng.random(users) > 0.1  # 10% of customers have no attribute row
    people = pd.DataFrame({"customer": np.arange(users)[known] + 1000,
                           "segment": np.array(["a", "b", "c", "d"])[segment[known]],
                           "city": np.array([f"city_{c}" for c in range(12)])[
                               rng.integers(0, 12, known.sum())]})
    table = pd.DataFrame({"sku": np.arange(items), "department": [f"d{i % 10}" for i in
                                                                 range(items)],
                          "price": np.round(rng.lognormal(2.5, 0.6, items), 2),
                          "name": [f"sku {i}" for i in range(items)]})
    return {"events": log, "users": people, "items": table}


def write(shape: str, out: Path, rows: int | None = None, seed: int = 0) -> list[Path]:
    """Write one shape's files under `out`; returns their paths."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"seed": seed} | ({"rows": rows} if rows else {})
    frames = {"criteo": criteo, "reviews": reviews, "retail": retail}[shape](**kwargs)
    paths = []
    for name, frame in frames.items():
        path = out / (f"{name}.parquet" if shape == "retail" and name == "events"
                      else f"{name}.csv")
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recflow example-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=SHAPES)
    parser.add_argument("--out", type=Path, required=True, help="directory for the files")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in write(args.shape, args.out, args.rows, args.seed):
        print(path)  # noqa: T201 - the command's output
    return 0
