"""A seeded Criteo-shaped CTR log with a known generating model, for `bench_ctr.py`.

Columns: `label` (0/1), `I1..I13` (heavy-tailed counts, 2-40% missing), `C1..C26`
(8-hex-char tokens, Zipf frequencies over 4 to 60k values, 0-30% missing). The click
logit is planted, so the best achievable AUC (the *oracle*: the true probability as the
score) is known and written beside the data:

    logit = b + Σ_main w_f[c_f]                      main effects of 12 categorical fields
              + Σ_(i,j) <u_i[c_i], u_j[c_j]>          20 FM-style pairwise crosses (rank 4)
              + Σ_(c,n) s_c[c_c] · z(log1p(I_n))      4 numeric x categorical slopes
              + Σ_n β_n · z(log1p(I_n))               6 numeric main effects

A missing token is a value of its own (index 0 of every effect table); a missing count
contributes z = 0. `b` is set so that about a quarter of the rows click (Criteo's rate).
Vectorised numpy: 1.2M rows take seconds; the CSVs are written by pyarrow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
RANK = 4  # latent dimension of the planted crosses


@dataclass(frozen=True)
class Planted:
    """The generating model's structure (which fields carry which effect)."""

    main: list[int]
    crosses: list[tuple[int, int]]
    slopes: list[tuple[int, int]]  # (categorical field, numeric field)
    numeric: list[int]


def _cardinalities(rng: np.random.Generator) -> np.ndarray:
    """Criteo-like spread: a few tiny fields, most hundreds to thousands, some tens of thousands."""
    return np.round(np.exp(rng.uniform(np.log(4), np.log(60_000), len(CATEGORICAL)))).astype(int)


def _zipf_codes(rng: np.random.Generator, n: int, card: int, exponent: float,
                missing: float) -> np.ndarray:
    """Codes 1..card with Zipf(exponent) frequencies over a shuffled rank order; 0 = missing."""
    p = 1.0 / np.arange(1, card + 1) ** exponent
    ranks = np.searchsorted(np.cumsum(p / p.sum()), rng.random(n), side="right")
    codes = rng.permutation(card)[np.minimum(ranks, card - 1)] + 1
    codes[rng.random(n) < missing] = 0
    return codes


def _counts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw counts with NaN gaps, z of log1p with gaps -> 0), 13 columns each."""
    raw = np.empty((n, len(NUMERIC)))
    z = np.empty_like(raw)
    for j in range(len(NUMERIC)):
        x = np.floor(rng.lognormal(rng.uniform(0.0, 3.0), rng.uniform(0.8, 2.0), n))
        logx = np.log1p(x)
        z[:, j] = (logx - logx.mean()) / logx.std()
        gaps = rng.random(n) < rng.uniform(0.02, 0.4)
        x[gaps], z[gaps, j] = np.nan, 0.0
        raw[:, j] = x
    return raw, z


def _planted(rng: np.random.Generator) -> Planted:
    pairs = [(i, j) for i in range(len(CATEGORICAL)) for j in range(i + 1, len(CATEGORICAL))]
    chosen = rng.choice(len(pairs), 20, replace=False)
    return Planted(
        main=sorted(rng.choice(len(CATEGORICAL), 12, replace=False).tolist()),
        crosses=[pairs[k] for k in chosen],
        slopes=[(int(c), int(m)) for c, m in zip(rng.choice(len(CATEGORICAL), 4, replace=False),
                                                 rng.choice(len(NUMERIC), 4, replace=False),
                                                 strict=True)],
        numeric=sorted(rng.choice(len(NUMERIC), 6, replace=False).tolist()),
    )


def _logit(rng: np.random.Generator, codes: np.ndarray, z: np.ndarray, cards: np.ndarray,
           plan: Planted) -> np.ndarray:
    """The planted logit without intercept (see the module docstring)."""
    logit = np.zeros(len(codes))
    for f in plan.main:
        logit += rng.normal(0, 0.35, cards[f] + 1)[codes[:, f]]
    latent = {f: rng.normal(0, 0.42, (cards[f] + 1, RANK))
              for f in {f for pair in plan.crosses for f in pair}}
    for i, j in plan.crosses:
        logit += np.einsum("nk,nk->n", latent[i][codes[:, i]], latent[j][codes[:, j]])
    for c, m in plan.slopes:
        logit += rng.normal(0, 0.5, cards[c] + 1)[codes[:, c]] * z[:, m]
    for m in plan.numeric:
        logit += rng.normal(0, 0.25) * z[:, m]
    return logit


def _intercept(logit: np.ndarray, rate: float) -> float:
    """b with mean(sigmoid(b + logit)) == rate (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + logit)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def generate(rows: dict[str, int], seed: int = 0, rate: float = 0.25
             ) -> tuple[dict[str, pa.Table], dict[str, object]]:
    """Split name -> arrow table, and the oracle summary (planted structure, oracle AUC/logloss)."""
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(seed)
    n = sum(rows.values())
    cards = _cardinalities(rng)
    codes = np.stack([_zipf_codes(rng, n, int(cards[f]), rng.uniform(0.9, 1.3),
                                  0.0 if f < 4 else rng.uniform(0.0, 0.3))
                      for f in range(len(CATEGORICAL))], axis=1)
    raw, z = _counts(rng, n)
    plan = _planted(rng)
    logit = _logit(rng, codes, z, cards, plan)
    prob = 1 / (1 + np.exp(-(_intercept(logit, rate) + logit)))
    label = (rng.random(n) < prob).astype(np.int64)
    vocab = [pa.array([f"{v:08x}" for v in rng.choice(2**31, int(c), replace=False)])
             for c in cards]
    tables, oracle, start = {}, {}, 0
    for split, count in rows.items():
        part = slice(start, start + count)
        start += count
        columns = {"label": pa.array(label[part])}
        columns |= {name: pa.array(raw[part, j], from_pandas=True)
                    for j, name in enumerate(NUMERIC)}
        for f, name in enumerate(CATEGORICAL):
            c = codes[part, f]
            columns[name] = pa.DictionaryArray.from_arrays(
                pa.array(c - 1, mask=c == 0, type=pa.int32()), vocab[f]).cast(pa.string())
        tables[split] = pa.table(columns)
        oracle[split] = {"rows": count, "ctr": float(label[part].mean()),
                         "oracle_auc": float(roc_auc_score(label[part], prob[part])),
                         "oracle_logloss": float(log_loss(label[part], prob[part]))}
    summary = {"seed": seed, "cardinalities": {n: int(c) for n, c in zip(CATEGORICAL, cards,
                                                                           strict=True)},
               "planted": {"main": [CATEGORICAL[f] for f in plan.main],
                           "crosses": [[CATEGORICAL[i], CATEGORICAL[j]] for i, j in plan.crosses],
                           "slopes": [[CATEGORICAL[c], NUMERIC[m]] for c, m in plan.slopes],
                           "numeric": [NUMERIC[m] for m in plan.numeric], "rank": RANK},
               "splits": oracle}
    return tables, summary


def write(out: Path, rows: dict[str, int], seed: int = 0) -> dict[str, object]:
    """`out/{split}.csv` and `out/oracle.json`; reuses them when the oracle file matches."""
    marker = out / "oracle.json"
    if marker.exists():
        summary = json.loads(marker.read_text())
        if summary.get("seed") == seed and {s: v["rows"] for s, v in
                                            summary["splits"].items()} == rows:
            return summary
    tables, summary = generate(rows, seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, table in tables.items():
        pacsv.write_csv(table, out / f"{split}.csv")
    marker.write_text(json.dumps(summary, indent=2))
    return summary
