"""TIGER serving: trie-constrained beam search in numpy over the exported decoder step.

    from recflow.serving.generative import GenerativeRetriever
    retriever = GenerativeRetriever("data/07_model_output/retrieval/tiger/decoder_step.onnx")
    retriever.recommend([np.array([12, 7, 301])], k=10)   # (1, 10) item indices

Imports neither torch nor Kedro: onnxruntime + numpy only. The graph (written by
`recflow.export.retrieval.export_tiger`) maps right-padded token rows ``tokens
(B, L)`` and a read position ``last (B,)`` to next-token logits; its metadata
carries the semantic-ID table and the token layout, from which this module builds
the trie of valid IDs and the history prefixes. The loop is a line-by-line numpy
port of `recflow.models.retrieval.tiger.constrained_beam_search` (same masking,
log-softmax, top-k over (beam x code), dead beams), so it returns the same items;
a test checks it. `recommend` also applies TIGER's cold-start rule as
`Tiger.recommend` does: a second search under a trie of the cold items (listed in
the metadata), merged so every top-K prefix holds ``floor(cold_share * K)`` of them.

Trade-off, runtime loop vs exporting the search: the search could be one ONNX
graph (a ``Loop`` over T levels with ``TopK``, ``GatherND`` on the dense trie
table as a constant). We keep it outside because (1) the graph stays a plain
Transformer that onnxruntime's optimiser, int8 quantisation and other runtimes
(TensorRT, CoreML) handle, while ``Loop`` with data-dependent beam bookkeeping is
where exporters and execution providers are weakest; (2) the trie (nodes x
vocab int64) can be far larger than the model, and here it is rebuilt from the
compact semantic-ID table instead of being baked in; (3) business rules
(filter seen items, cold-item quotas, per-request beam size) are ordinary numpy.
The cost: T onnxruntime calls per batch plus numpy work between them, and, since
the exported step has no KV cache, each call re-encodes the whole (B x W, L)
window; at T = 3-4 steps over ~40-85 tokens that is acceptable, and batching
requests amortises the per-call overhead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from recflow.tokenization.trie import TrieTable, merge_cold, repeat_penalty, seen_fraction


def _log_softmax(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    shifted = x - top
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


class GenerativeRetriever:
    """TIGER retrieval served from its exported decoder step (see the module docstring)."""

    def __init__(self, model: Any, *, threads: int | None = None) -> None:
        """`model`: a path, serialized bytes, or an `onnx.ModelProto` of the step graph."""
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        self.session = ort.InferenceSession(model if isinstance(model, bytes) else str(Path(model)),
                                            options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = {"semantic_ids", "vocab_sizes", "offsets", "n_tok", "max_items", "length"} - set(
            meta)
        if missing:
            raise ValueError(f"not a recflow TIGER step graph: metadata lacks {sorted(missing)}")
        self.sids = np.asarray(json.loads(meta["semantic_ids"]), dtype=np.int64)
        self.vocab_sizes = [int(v) for v in json.loads(meta["vocab_sizes"])]
        self.offsets = np.asarray(json.loads(meta["offsets"]), dtype=np.int64)
        self.n_tok = int(meta["n_tok"])
        self.max_items = int(meta["max_items"])
        self.length = int(meta["length"])
        self.beam_size = int(meta.get("beam_size", 20))
        repeat = meta.get("repeat_bias")
        self.repeat_bias = None if repeat is None else json.loads(repeat)
        if isinstance(self.repeat_bias, list):
            raise ValueError("this TIGER step graph carries a per-level repeat_bias (recflow "
                             "before 2026-11-30): re-run the retrieval and export pipelines")
        self.repeat_window = int(meta.get("repeat_window", self.max_items))
        vocab = max(self.vocab_sizes)
        self.trie = TrieTable(self.sids[1:], np.arange(1, len(self.sids)), vocab)
        self.cold_items = np.asarray(json.loads(meta.get("cold_items", "[]")), dtype=np.int64)
        self.cold_share = float(meta.get("cold_share", 0.0))
        self.cold_trie = (TrieTable(self.sids[self.cold_items], self.cold_items, vocab)
                          if len(self.cold_items) else None)

    @property
    def n_items(self) -> int:
        return len(self.sids) - 1

    def _latest(self, histories: list[np.ndarray], n: int) -> np.ndarray:
        """The last `n` items of each history, left-padded with 0: (B, n)."""
        items = np.zeros((len(histories), n), dtype=np.int64)
        for i, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)[-n:]
            if len(h):
                items[i, n - len(h):] = h
        if ((items < 0) | (items > self.n_items)).any():
            raise ValueError(f"history item indices must lie in 1..{self.n_items}")
        return items

    def window(self, histories: list[np.ndarray]) -> np.ndarray:
        """The items the repeat bias applies to: the last `repeat_window` of each history."""
        return self._latest(histories, self.repeat_window)

    def history_tokens(self, histories: list[np.ndarray]) -> np.ndarray:
        """[BOS, tokens of the last `max_items` items], left-padded: (B, 1 + max_items * T)."""
        items = self._latest(histories, self.max_items)
        toks = self.sids[items] + self.offsets + 2
        toks[items == 0] = 0
        flat = toks.reshape(len(items), -1)
        out = np.concatenate([np.zeros((len(items), 1), dtype=np.int64), flat], axis=1)
        n_real = (items > 0).sum(1) * self.n_tok
        out[np.arange(len(items)), out.shape[1] - 1 - n_real] = 1  # BOS before the first token
        return out

    def step(self, tokens: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Next-token logits (B, V) at position `last` of right-padded `tokens` (B, L)."""
        return self.session.run(None, {"tokens": tokens, "last": last})[0]

    def search(self, prefix: np.ndarray, beam: int, trie: TrieTable | None = None,
               window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decode T tokens per row under `trie` (default: every catalogue ID): (B, beam)
        item indices and log-probs.

        Same contract as the torch `constrained_beam_search`: rows with fewer than
        `beam` reachable items get -1 / -inf in the spare slots. `window` (`window()` of
        the same histories) lets a model trained with `repeat_bias` apply it.
        """
        trie = trie or self.trie
        paths = codes = None
        if self.repeat_bias is not None and window is not None:
            paths, codes = trie.window(window, self.sids)
        b, width = prefix.shape
        if width + self.n_tok - 1 != self.length:
            raise ValueError(f"prefix of {width} tokens; this graph expects "
                             f"{self.length - self.n_tok + 1}")
        nodes = np.zeros((b, 1), dtype=np.int64)
        scores = np.zeros((b, 1), dtype=np.float32)
        seqs = np.zeros((b, 1, self.length), dtype=np.int64)
        seqs[:, 0, :width] = prefix
        for level in range(self.n_tok):
            w = nodes.shape[1]
            last = np.full(b * w, width - 1 + level, dtype=np.int64)
            logits = self.step(seqs.reshape(b * w, -1), last)
            start = 2 + int(self.offsets[level])
            vocab = self.vocab_sizes[level]
            logp = logits[:, start:start + vocab]
            if paths is not None:
                seen = seen_fraction(trie, nodes, paths[:, :, level], codes[:, :, level], vocab)
                logp = logp + repeat_penalty(seen.reshape(b * w, vocab), self.repeat_bias)
            allowed = trie.next_node[nodes.reshape(-1)][:, :vocab] >= 0
            logp = _log_softmax(np.where(allowed, logp, -np.inf).astype(np.float32))
            cand = (scores.reshape(-1, 1) + logp).reshape(b, w * vocab)
            k = min(beam, w * vocab)
            idx = np.argsort(-cand, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(cand, idx, axis=1)
            parent, token = idx // vocab, idx % vocab
            parent_nodes = np.take_along_axis(nodes, parent, axis=1)
            nxt = trie.next_node[parent_nodes, token]
            dead = np.isinf(top)
            nodes = np.where(dead, 0, nxt)
            scores = top
            if level + 1 < self.n_tok:  # the last token is never read back
                seqs = np.take_along_axis(seqs, parent[:, :, None], axis=1)
                seqs[:, :, width + level] = start + token
        items = trie.leaf_item[nodes]
        items[np.isinf(scores)] = -1
        return items, scores

    def recommend(self, histories: list[np.ndarray], k: int, beam: int | None = None,
                  batch_size: int = 256) -> np.ndarray:
        """(n, k) item indices, best first (-1 where fewer than k items are reachable);
        with cold items in the metadata, TIGER's cold-start rule as in `Tiger.recommend`."""
        beam = max(beam or self.beam_size, k)
        share = self.cold_share if self.cold_trie is not None else 0.0
        n_cold = int(np.floor(k * share))
        out = []
        for start in range(0, len(histories), batch_size):
            chunk = histories[start:start + batch_size]
            prefix, window = self.history_tokens(chunk), self.window(chunk)
            items, _ = self.search(prefix, beam, window=window)
            if n_cold:
                cold, _ = self.search(prefix, max(n_cold, min(beam, len(self.cold_items))),
                                      self.cold_trie, window)
                items = merge_cold(items, cold, k, share)
            out.append(items[:, :k])
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)
