"""The semantic-ID trie and TIGER's cold-item merge: numpy only.

Shared by the torch model (`recflow.models.retrieval.tiger`) and the onnxruntime
runtime (`recflow.serving.generative`), which must not import torch; building
both from this one class keeps their node numbers, and so their beams, equal.
"""

from __future__ import annotations

import numpy as np


class TrieTable:
    """Prefix tree of valid IDs as a dense table ``next_node[node, token]`` (-1 = none).

    Node 0 is the root; after T tokens a node is a leaf and ``leaf_item[node]`` is the
    item index. Depth is fixed (the disambiguation digit is always present).
    """

    def __init__(self, ids: np.ndarray, item_index: np.ndarray, vocab: int) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.depth = ids.shape[1]
        if len(np.unique(ids, axis=0)) != len(ids):
            raise ValueError("semantic IDs are not unique; disambiguate them before building a trie")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"semantic-ID tokens must lie in [0, {vocab}); got "
                             f"[{ids.min()}, {ids.max()}]")
        children: list[dict[int, int]] = [{}]
        leaf: dict[int, int] = {}
        for row, item in zip(ids.tolist(), np.asarray(item_index).tolist(), strict=True):
            node = 0
            for token in row:
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                node = nxt
            leaf[node] = item
        self.next_node = np.full((len(children), vocab), -1, dtype=np.int64)
        for node, kids in enumerate(children):
            for token, nxt in kids.items():
                self.next_node[node, token] = nxt
        self.leaf_item = np.full(len(children), -1, dtype=np.int64)
        for node, item in leaf.items():
            self.leaf_item[node] = item
        # IDs under each node (a child is always numbered after its parent)
        self.size = (self.leaf_item >= 0).astype(np.float32)
        for node in range(len(children) - 1, -1, -1):
            kids = list(children[node].values())
            if kids:
                self.size[node] = self.size[kids].sum()

    def contains(self, ids: np.ndarray) -> np.ndarray:
        node = np.zeros(len(ids), dtype=np.int64)
        for t in range(self.depth):
            node = np.where(node >= 0, self.next_node[np.maximum(node, 0), ids[:, t]], -1)
        return (node >= 0) & (self.leaf_item[np.maximum(node, 0)] >= 0)

    def paths(self, codes: np.ndarray) -> np.ndarray:
        """(..., T) codes -> (..., T) node reached *before* each token (-1 once off the trie).

        Column l is the node whose children are the candidates for token l, so two items
        share ``paths[..., l]`` exactly when their first l tokens agree.
        """
        codes = np.asarray(codes, dtype=np.int64)
        out = np.empty(codes.shape, dtype=np.int64)
        node = np.zeros(codes.shape[:-1], dtype=np.int64)
        for t in range(codes.shape[-1]):
            out[..., t] = node
            nxt = self.next_node[np.maximum(node, 0), np.clip(codes[..., t], 0, None)]
            node = np.where((node >= 0) & (codes[..., t] >= 0), nxt, -1)
        return out

    def window(self, items: np.ndarray, sid_table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, I) window items (0 = padding) -> their (B, I, T) paths in this trie and codes.

        Paths are -1 for padding, for items this trie does not hold (a warm item in the
        cold trie) and for repeats of an item earlier in the row, so that counting paths
        counts distinct window items of the trie.
        """
        items = np.asarray(items)
        codes = sid_table[items]
        nodes = self.paths(codes)
        order = np.argsort(items, axis=1, kind="stable")  # equal items keep their order
        ranked = np.take_along_axis(items, order, axis=1)
        repeat = np.zeros(items.shape, dtype=bool)
        np.put_along_axis(repeat, order, np.pad(ranked[:, 1:] == ranked[:, :-1],
                                                ((0, 0), (1, 0))), axis=1)
        held = self.contains(codes.reshape(-1, codes.shape[-1])).reshape(items.shape)
        nodes[(items == 0) | repeat | ~held] = -1
        return nodes, codes


def seen_fraction(trie: TrieTable, query: np.ndarray, window_nodes: np.ndarray,
                  window_codes: np.ndarray, vocab: int, visible: np.ndarray | None = None
                  ) -> np.ndarray:
    """(b, w, vocab) float: the share of the IDs under each next token that are window items.

    `query` (b, w) are the trie nodes of w partial IDs per row (beams, or the targets'
    prefixes in training); `window_nodes` / `window_codes` (b, I) are, for the row's I
    window items, the node before this level's token and that token (`TrieTable.paths`
    and the codes at the level; node -1 = padding or off the trie); `visible` (b, w, I)
    optionally limits which window items each query sees (training: the items before
    the target). 1 means every item the token leads to is in the window
    (at the last level: the token *is* a window item); 0 means none is.
    """
    match = (query[:, :, None] == window_nodes[:, None, :]) & (window_nodes >= 0)[:, None, :]
    if visible is not None:
        match &= visible
    onehot = np.zeros((*window_codes.shape, vocab), dtype=np.float32)
    np.put_along_axis(onehot, np.clip(window_codes, 0, vocab - 1)[..., None], 1.0, axis=-1)
    count = np.matmul(match.astype(np.float32), onehot)
    child = trie.next_node[np.maximum(query, 0)][..., :vocab]
    size = np.where(child >= 0, trie.size[np.maximum(child, 0)], 1.0)
    return np.minimum(count / size, 1.0)


def repeat_penalty(fraction: np.ndarray, bias: float) -> np.ndarray:
    """log(1 - f (1 - e^bias)): an item-level bias carried to a prefix token.

    Adding `bias` to the logit of every window item and marginalising over the items
    under a token (taken as equally likely) scales the token's probability by
    1 - f + f e^bias; the last level gets exactly `bias` for a window item, 0 otherwise.
    """
    keep = 1.0 - fraction * (1.0 - np.exp(np.float32(bias)))
    return np.log(np.maximum(keep, np.float32(1e-30)))


def merge_cold(warm: np.ndarray, cold: np.ndarray, k: int, share: float) -> np.ndarray:
    """Top-k lists where every prefix K holds floor(share * K) cold candidates (when available).

    `warm` (B, >= k) and `cold` (B, C) are ranked item indices (-1 = none); cold
    candidates already in the warm top-k are dropped, and slots without a cold
    candidate go back to the next warm items.
    """
    position = np.arange(1, k + 1)
    cold_slot = np.floor(position * share) > np.floor((position - 1) * share)
    dup = (cold[:, :, None] == warm[:, None, :k]).any(axis=2)
    valid = (cold > 0) & ~dup
    cold = np.take_along_axis(cold, np.argsort(~valid, axis=1, kind="stable"), axis=1)
    n_cold = valid.sum(axis=1, keepdims=True)
    cold_rank = np.cumsum(cold_slot) - 1
    is_cold = cold_slot[None, :] & (cold_rank[None, :] < n_cold)
    warm_rank = np.cumsum(~is_cold, axis=1) - 1
    pick_cold = np.take_along_axis(cold, np.clip(np.broadcast_to(cold_rank, is_cold.shape), 0,
                                                 max(cold.shape[1] - 1, 0)), axis=1) \
        if cold.shape[1] else np.full(is_cold.shape, -1)
    pick_warm = np.take_along_axis(warm, np.minimum(warm_rank, warm.shape[1] - 1), axis=1)
    return np.where(is_cold, pick_cold, pick_warm)
