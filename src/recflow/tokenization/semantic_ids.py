"""Semantic-ID tables: collision handling, cold-start assignment and code metrics.

Items whose L codes coincide get a final disambiguation digit 0, 1, 2, ... (in item
order), so every item's ID ``(c_1, ..., c_L, d)`` is unique. The digit is always
present (0 for items without a collision), so every ID has L + 1 tokens and the
decoding trie has a fixed depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SID_PREFIX = "sid_"


def sid_columns(n_tokens: int) -> list[str]:
    return [f"{SID_PREFIX}{i}" for i in range(n_tokens)]


def collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full code tuple is not unique: 1 - distinct tuples / items."""
    codes = np.asarray(codes)
    if len(codes) == 0:
        return 0.0
    return float(1.0 - len(np.unique(codes, axis=0)) / len(codes))


def distinct_prefixes(codes: np.ndarray) -> list[int]:
    """Per depth l = 1..L: number of distinct code prefixes (c_1..c_l), before disambiguation.

    The last entry is the number of distinct full code tuples, items * (1 - collision rate);
    a hierarchy that actually separates items grows quickly with l.
    """
    codes = np.asarray(codes)
    if len(codes) == 0:
        return [0] * (codes.shape[1] if codes.ndim == 2 else 0)
    return [int(len(np.unique(codes[:, :lv], axis=0))) for lv in range(1, codes.shape[1] + 1)]


def disambiguate(codes: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Append the disambiguation digit: the rank of each item among items sharing its codes.

    `start` (optional, one per row) offsets the digit, used to continue numbering
    after IDs that already exist (cold-start assignment).
    """
    codes = np.asarray(codes, dtype=np.int64)
    if len(codes) == 0:
        return np.zeros((0, codes.shape[1] + 1), dtype=np.int64)
    _, group = np.unique(codes, axis=0, return_inverse=True)
    digit = pd.Series(group.ravel()).groupby(group.ravel()).cumcount().to_numpy(np.int64)
    if start is not None:
        digit = digit + np.asarray(start, dtype=np.int64)
    return np.column_stack([codes, digit])


def utilization(codes: np.ndarray, codebook_size: int) -> list[float]:
    """Per level: share of the codebook that at least one item uses."""
    return [float(len(np.unique(codes[:, lv])) / codebook_size) for lv in range(codes.shape[1])]


def perplexity(codes: np.ndarray) -> list[float]:
    """Per level: exp(entropy) of the code distribution (= number of equally used codes)."""
    out = []
    for lv in range(codes.shape[1]):
        p = np.bincount(codes[:, lv]).astype(np.float64)
        p = p[p > 0] / p.sum()
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return out


def prefix_purity(prefix: np.ndarray, labels: np.ndarray) -> float:
    """Share of items whose label is the majority label of their prefix group."""
    frame = pd.DataFrame({"g": np.asarray(prefix), "y": np.asarray(labels)})
    if frame.empty:
        return float("nan")
    majority = frame.groupby(["g", "y"]).size().groupby(level=0).max()
    return float(majority.sum() / len(frame))


@dataclass
class SemanticIdTable:
    """item_id -> unique semantic ID (L codes + disambiguation digit)."""

    item_ids: np.ndarray  # (n,)
    ids: np.ndarray  # (n, L + 1)
    codebook_size: int

    @classmethod
    def build(cls, item_ids: np.ndarray, codes: np.ndarray, codebook_size: int) -> SemanticIdTable:
        return cls(np.asarray(item_ids), disambiguate(codes), codebook_size)

    @property
    def levels(self) -> int:
        return self.ids.shape[1] - 1

    @property
    def n_tokens(self) -> int:
        return self.ids.shape[1]

    def vocab_sizes(self) -> list[int]:
        """Tokens per position: the codebook for code levels, max digit + 1 for the last."""
        return [self.codebook_size] * self.levels + [int(self.ids[:, -1].max()) + 1]

    def add(self, item_ids: np.ndarray, codes: np.ndarray) -> SemanticIdTable:
        """Cold start: give new items IDs from their codes, continuing each group's digits."""
        codes = np.asarray(codes, dtype=np.int64)
        existing = pd.DataFrame(self.ids[:, :-1]).assign(d=self.ids[:, -1])
        next_digit = existing.groupby(list(range(self.levels)))["d"].max() + 1
        keys = pd.MultiIndex.from_arrays([codes[:, i] for i in range(self.levels)])
        start = next_digit.reindex(keys).fillna(0).to_numpy(np.int64)
        new_ids = disambiguate(codes, start=start)
        return SemanticIdTable(np.concatenate([self.item_ids, np.asarray(item_ids)]),
                               np.vstack([self.ids, new_ids]), self.codebook_size)

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.ids, columns=sid_columns(self.n_tokens))
        frame.insert(0, "item_id", self.item_ids)
        frame["semantic_id"] = ["-".join(map(str, row)) for row in self.ids]
        frame.attrs["codebook_size"] = self.codebook_size
        return frame

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, codebook_size: int | None = None) -> SemanticIdTable:
        cols = [c for c in frame.columns if c.startswith(SID_PREFIX)]
        if not cols:
            raise KeyError(f"semantic-ID table has no '{SID_PREFIX}*' columns: {list(frame.columns)}")
        ids = frame[cols].to_numpy(np.int64)
        size = codebook_size or int(ids[:, :-1].max()) + 1
        return cls(frame["item_id"].to_numpy(), ids, size)


def code_metrics(codes: np.ndarray, table: SemanticIdTable, codebook_size: int,
                 labels: pd.DataFrame, purity_columns: list[str]) -> dict[str, object]:
    """How good a tokenizer's codes are: collisions before and after disambiguation, prefix
    spread, codebook use, and the purity of first-level groups for each label column
    beside its chance level (the same group sizes, shuffled)."""
    metrics: dict[str, object] = {
        "items": len(codes),
        "collision_rate_before": collision_rate(codes),
        "collision_rate": collision_rate(table.ids),  # after disambiguation: 0 by construction
        "distinct_prefixes": distinct_prefixes(codes),
        "max_disambiguation": int(table.ids[:, -1].max()),
        "utilization": utilization(codes, codebook_size),
        "perplexity": perplexity(codes),
        "usage": [np.bincount(codes[:, lv], minlength=codebook_size).tolist()
                  for lv in range(codes.shape[1])],
    }
    for column in purity_columns:
        if column in labels:
            metrics[f"purity_{column}"] = prefix_purity(codes[:, 0], labels[column].to_numpy())
            rng = np.random.default_rng(0)
            metrics[f"purity_{column}_shuffled"] = prefix_purity(
                rng.permutation(codes[:, 0]), labels[column].to_numpy())
    return metrics
