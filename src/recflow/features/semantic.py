"""Semantic-ID prefix tokens: item id -> index of its code prefix (c1, c1c2, c1c2c3, ...).

Items with similar content share code prefixes, so a prefix embedding is trained on
every impression of every item under it: a rare or cold item borrows what its
content neighbours learned, where its own id embedding is (nearly) untrained.
Each prefix length is an ordinary categorical field with its own vocabulary.

The fitted state is the item -> index map itself, so serving reproduces the
tokens from the raw item id alone (no table, no torch). Plain numpy/pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from recflow.features.transforms import N_RESERVED, OOV, PAD, align_ids


class CodeTable(Protocol):
    """What a prefix needs from a semantic-ID table (`SemanticIdTable` satisfies it)."""

    item_ids: np.ndarray  # (n,)
    ids: np.ndarray  # (n, L + 1): L codes, then the disambiguation digit

    @property
    def levels(self) -> int: ...


def prefix_groups(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Row -> id of its distinct code tuple (lexicographic order), and how many there are."""
    codes = np.asarray(codes, dtype=np.int64)
    if not len(codes):
        return np.zeros(0, dtype=np.int64), 0
    distinct, group = np.unique(codes, axis=0, return_inverse=True)
    return group.ravel().astype(np.int64), len(distinct)


@dataclass
class SemanticPrefix:
    """Item -> its length-`level` semantic-ID prefix, as a vocabulary index fitted on train.

    Prefixes seen on fewer than `min_count` train impressions map to OOV (their
    embedding would stay untrained); items missing from the table map to OOV too,
    missing ids to PAD. Known prefixes get 2.., most frequent in train first.
    """

    level: int = 1
    min_count: int = 1
    items: list[Any] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    num_prefixes: int = 0
    kind: ClassVar[str] = "categorical"

    def fit(self, column: pd.Series, table: CodeTable) -> SemanticPrefix:
        item_ids = np.asarray(table.item_ids)
        if self.level > table.levels:
            raise ValueError(f"prefix level {self.level} exceeds the table's {table.levels} "
                             f"code levels (the disambiguation digit is not a prefix level)")
        index = pd.Index(item_ids)
        if not index.is_unique:
            raise ValueError(f"semantic-ID table lists item ids more than once, e.g. "
                             f"{index[index.duplicated()][:5].tolist()}")
        group, n_groups = prefix_groups(np.asarray(table.ids)[:, : self.level])
        present = column.dropna()
        pos = index.get_indexer(align_ids(present, index))
        counts = np.bincount(group[pos[pos >= 0]], minlength=n_groups)
        kept = np.flatnonzero(counts >= self.min_count)
        kept = kept[np.lexsort((kept, -counts[kept]))]  # most frequent first, ties by prefix
        group_index = np.full(n_groups, OOV, dtype=np.int64)
        group_index[kept] = np.arange(len(kept)) + N_RESERVED
        ids = group_index[group]
        known = ids != OOV
        self.items = item_ids[known].tolist()
        self.ids = ids[known].tolist()
        self.num_prefixes = len(kept)
        self._index = None
        return self

    @property
    def size(self) -> int:
        return self.num_prefixes + N_RESERVED

    def _lookup(self) -> tuple[pd.Index, np.ndarray]:
        if getattr(self, "_index", None) is None:
            self._index = (pd.Index(self.items), np.asarray(self.ids, dtype=np.int64))
        return self._index

    def transform(self, column: pd.Series | np.ndarray) -> np.ndarray:
        values = column if isinstance(column, pd.Series) else pd.Series(column)
        missing = values.isna().to_numpy()
        out = np.full(len(values), OOV, dtype=np.int64)
        out[missing] = PAD
        index, ids = self._lookup()
        if len(index) and not missing.all():
            pos = index.get_indexer(align_ids(values[~missing], index))
            out[~missing] = np.where(pos >= 0, ids[pos], OOV)
        return out

    def state(self) -> dict[str, Any]:
        return {"items": self.items, "ids": self.ids, "num_prefixes": self.num_prefixes}

    def load_state(self, state: dict[str, Any]) -> SemanticPrefix:
        self.items, self.ids = list(state["items"]), [int(i) for i in state["ids"]]
        self.num_prefixes = int(state["num_prefixes"])
        self._index = None
        return self


def prefix_field_name(name: str, level: int) -> str:
    """`item_sid` level 2 -> `item_sid_p2` (the c1c2 token)."""
    return f"{name}_p{level}"
