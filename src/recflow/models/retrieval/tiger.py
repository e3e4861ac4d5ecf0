"""TIGER-style generative retrieval over semantic IDs, with trie-constrained beam search.

Each item is its semantic ID, T = L + 1 tokens (L codes + the disambiguation
digit; see `recflow.tokenization.semantic_ids`). A user's history becomes the
token stream ``[BOS, c^1_1 .. c^1_T, c^2_1 .. c^2_T, ...]`` and a decoder-only
Transformer is trained with next-token cross-entropy (each position predicts the
next token among the codes of its level). Retrieval decodes the next item's ID
code by code with beam search; at every step codes that no valid ID continues
are masked (a trie over all catalogue IDs), so every returned ID is a real item.

Cold start (TIGER's epsilon rule): items without training events have IDs from
their content, but the decoder never saw them as targets, so they rarely win
the full beam. A second search under a trie of the cold items alone gives the
model's best cold items (their codes are shared with warm items, so the
per-level code distributions still apply), and they take ``cold_share`` of
every top-K prefix (positions 10, 20, ... at 0.1). By default (``cold_share: null``) the
share is the share of cold items among the validation targets: 0 when the split has no
cold targets, so a warm benchmark does not give up a top-10 slot to cold items.

Repeat bias (``repeat_bias: true``): SASRec's learned "already consumed" scalar b, at
the item level. Adding b to every item of the input window and marginalising over the
items under a token (taken as equally likely) scales the token's probability by
1 - f + f e^b, f the share of the token's items that are window items
(`recflow.tokenization.trie.seen_fraction` / `repeat_penalty`). Its log is added to the
logits inside each level's softmax, in training (the items before each target) and in
both beam searches alike; at the last level a window item gets exactly b. On ML-100K b
goes far negative (nobody rates a film twice), so prefixes whose films were all seen
drop out of the beams early instead of filling them.

Item token (``item_token: true``): the ID's last token is the item's own index instead
of the disambiguation digit, so each history item also feeds an item embedding, and the
last decoding step chooses among the items of a code prefix. With ``code_levels: 1``
(the movielens_recbole env) that is one of 64 collaborative clusters, then the film. The trie table grows to
(nodes x items) entries: fine for ~10^4 items, not for millions.

Design choice: decoder-only (one stack) rather than TIGER's encoder-decoder. The
beam search runs the history once per user (`prefill`) and then extends each
beam by one token against a key/value cache (`step`), so the T decoding steps
cost O(S) each instead of re-running O(S^2) attention for every beam. The
exported graph stays the plain "step" (history tokens -> next-token logits).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from recflow.config_types import MAX_BATCH, MAX_COUNT, MAX_EPOCHS
from recflow.models.retrieval.base import (
    RETRIEVAL_MODELS,
    RetrievalData,
    Retriever,
    causal_pad_mask,
    coerce_params,
    fit_retriever,
    left_pad,
    windows,
)
from recflow.models.retrieval.blocks import (
    TransformerParams,
    init_normal,
    transformer_layer,
    use_fast_dropout,
)
from recflow.tokenization.semantic_ids import disambiguate
from recflow.tokenization.trie import TrieTable, merge_cold, seen_fraction
from recflow.training.core import Step, scaled_lr

logger = logging.getLogger(__name__)
MAX_ITEM_TOKENS = 10_001  # rows of the ID table (items + padding): the dense trie is >= 0.75 GiB here


class Trie(TrieTable):
    """`TrieTable` with torch lookups for the batched beam search."""

    def __init__(self, ids: np.ndarray, item_index: np.ndarray, vocab: int) -> None:
        super().__init__(ids, item_index, vocab)
        self._next = torch.as_tensor(self.next_node)

    def allowed(self, nodes: torch.Tensor) -> torch.Tensor:
        """(n, vocab) bool: which tokens extend each node to a valid prefix."""
        return self._next[nodes] >= 0

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self._next[nodes, tokens]

    def items(self, nodes: np.ndarray) -> np.ndarray:
        return self.leaf_item[np.asarray(nodes)]


class TigerParams(TransformerParams):
    """TIGER's params: the shared Transformer options (`blocks.TransformerParams`, SASRec's
    block by default) and its own."""

    max_items: int = Field(20, ge=1, le=128, description="History items fed to the decoder.")
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS, description="Most epochs; validation "
                        "with patience (retrieval.training) stops earlier.")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="Windows per step.")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    beam_size: int = Field(20, ge=1, le=MAX_COUNT, description="Beams kept (>= the largest K evaluated).")
    repeat_bias: bool = Field(
        False, description="Learn SASRec's 'already consumed' scalar b for the items of the "
        "input window, carried to each code level as log(1 - f + f e^b), f the share of a "
        "token's items in the window. Exported as metadata; the served beam search applies it.")
    repeat_window: int | None = Field(
        None, ge=1, le=512, description="With repeat_bias: how many of the latest history "
        "items get it when recommending (null: max_items, the decoder's input). Training "
        "learns the bias on the items before each target in its window; a longer window "
        "applies the same 'already consumed' signal to older items of the history.")
    code_levels: int | None = Field(
        None, ge=1, le=16, description="Use the first n code levels of the semantic IDs "
        "(null: all of them); items that then share codes are told apart by the last token.")
    item_token: bool = Field(
        False, description="The last token is the item's own index rather than the "
        "disambiguation digit: an item embedding on the input, an item-level choice within "
        "a code prefix on the output (a dense trie of nodes x items: up to 10,000 items).")
    cold_share: float | None = Field(
        None, ge=0, le=1, description="TIGER's epsilon: at most this share of every top-K "
        "prefix goes to cold items (no training events) whose code prefix the model decodes. "
        "None: the share of cold items among the validation targets (0 without any).")

    @model_validator(mode="after")
    def _repeat_window_needs_the_bias(self) -> TigerParams:
        if self.repeat_window is not None and not self.repeat_bias:
            raise ValueError("repeat_window needs repeat_bias: true")
        return self


class TigerModule(nn.Module):
    """Decoder-only Transformer over semantic-ID tokens: (B, S) tokens -> (B, S, V) logits.

    Token ids: 0 pad, 1 BOS, then position t's code c has id ``2 + offset[t] + c``.
    """

    def __init__(self, vocab_sizes: list[int], p: TigerParams) -> None:
        super().__init__()
        self.heads = p.heads
        self.n_tok = len(vocab_sizes)
        self.vocab_sizes = list(vocab_sizes)
        offsets = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]).astype(np.int64)
        self.register_buffer("offsets", torch.as_tensor(offsets), persistent=False)
        self.total = int(sum(vocab_sizes)) + 2
        self.max_len = 1 + (p.max_items + 1) * self.n_tok
        d = p.embed_dim
        self.tok = nn.Embedding(self.total, d, padding_idx=0)
        self.pos = nn.Embedding(self.max_len, d)
        self.input_norm = nn.LayerNorm(d) if p.input_norm else nn.Identity()
        self.drop = nn.Dropout(p.dropout)
        self.decoder = nn.TransformerEncoder(transformer_layer(p, p.dropout), p.layers,
                                             enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d) if p.norm == "pre" else nn.Identity()
        self.head = nn.Linear(d, self.total)
        init_normal(self, p.init_std)
        with torch.no_grad():
            self.tok.weight[0].zero_()
        # a few logit units to travel: stepped at 20 x lr (recflow.training.core.scaled_lr)
        self.repeat = scaled_lr(nn.Parameter(torch.zeros(())), 20.0) if p.repeat_bias else None
        use_fast_dropout(self)

    def token_ids(self, sids: torch.Tensor) -> torch.Tensor:
        """(..., T) codes -> global token ids."""
        return sids + self.offsets + 2

    def embed(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, S) tokens at positions start.. -> (B, S, d) decoder input."""
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        return self.drop(self.input_norm(self.tok(tokens) + self.pos(pos)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.decoder(self.embed(tokens), mask=causal_pad_mask(tokens == 0, self.heads))
        return self.head(self.norm(h))

    def level_logits(self, logits: torch.Tensor, level: int) -> torch.Tensor:
        start = 2 + int(self.offsets[level])
        return logits[..., start:start + self.vocab_sizes[level]]

    # -- incremental decoding (inference only): the same layers, with a key/value cache --
    def _qkv(self, layer: nn.TransformerEncoderLayer, h: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, s, d = h.shape
        qkv = F.linear(h, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias)
        q, k, v = qkv.view(n, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _block(self, layer: nn.TransformerEncoderLayer, x: torch.Tensor, k_past: torch.Tensor
               | None, v_past: torch.Tensor | None, allowed: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One layer as nn.TransformerEncoderLayer computes it in eval, pre- or post-LN."""
        n, s, d = x.shape
        pre = layer.norm_first
        q, k, v = self._qkv(layer, layer.norm1(x) if pre else x)
        if k_past is not None:
            k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        x = x + layer.self_attn.out_proj(attn.transpose(1, 2).reshape(n, s, d))
        if pre:
            return x + _feed_forward(layer, layer.norm2(x)), k, v
        x = layer.norm1(x)
        return layer.norm2(x + _feed_forward(layer, x)), k, v

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list, torch.Tensor]:
        """Run the prefix once: (last-position logits, per-layer (K, V) cache, pad mask)."""
        n, s = tokens.shape
        pad = tokens == 0
        allowed = ~causal_pad_mask(pad, self.heads).view(n, self.heads, s, s)
        x = self.embed(tokens)
        cache = []
        for layer in self.decoder.layers:
            x, k, v = self._block(layer, x, None, None, allowed)
            cache.append((k, v))
        return self.head(self.norm(x[:, -1])), cache, pad

    @torch.no_grad()
    def step(self, token: torch.Tensor, cache: list, pad: torch.Tensor
             ) -> tuple[torch.Tensor, list, torch.Tensor]:
        """Append one token per row: O(S) attention against the cache instead of O(S^2)."""
        n, s = pad.shape
        pad = torch.cat([pad, torch.zeros(n, 1, dtype=torch.bool, device=pad.device)], dim=1)
        allowed = (~pad)[:, None, None, :]
        x = self.embed(token[:, None], start=s)
        new = []
        for layer, (k_past, v_past) in zip(self.decoder.layers, cache, strict=True):
            x, k, v = self._block(layer, x, k_past, v_past, allowed)
            new.append((k, v))
        return self.head(self.norm(x[:, -1])), new, pad


def _feed_forward(layer: nn.TransformerEncoderLayer, h: torch.Tensor) -> torch.Tensor:
    return layer.linear2(layer.activation(layer.linear1(h)))


def repeat_penalty(fraction: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """log(1 - f + f e^b), differentiable in b (`recflow.tokenization.trie.repeat_penalty`)."""
    return torch.log((1 - fraction * (1 - torch.exp(bias))).clamp_min(1e-30))


def history_tokens(module: TigerModule, sid_table: torch.Tensor, histories: list[np.ndarray],
                   max_items: int) -> torch.Tensor:
    """[BOS, tokens of the last `max_items` items], left-padded to 1 + max_items * T."""
    items = torch.as_tensor(left_pad(histories, max_items))  # (B, max_items)
    toks = module.token_ids(sid_table[items])  # (B, max_items, T)
    toks[items == 0] = 0
    bos = torch.ones(len(items), 1, dtype=torch.long)
    flat = toks.reshape(len(items), -1)
    # BOS goes right before the first real token so left padding stays contiguous
    n_real = (items > 0).sum(1) * module.n_tok
    out = torch.cat([torch.zeros_like(bos), flat], dim=1)
    first = out.shape[1] - 1 - n_real
    out[torch.arange(len(items)), first] = 1
    return out


@torch.no_grad()
def constrained_beam_search(module: TigerModule, trie: Trie, prefix: torch.Tensor, beam: int,
                            window: tuple[np.ndarray, np.ndarray] | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Decode T tokens per row under the trie; returns (B, beam) item indices and log-probs.

    Rows with fewer than `beam` reachable items get -1 / -inf in the spare slots. With
    the module's `repeat` bias, `window` (`Trie.window` of the rows' history items in
    this trie) says which tokens continue a window item's ID.
    """
    b = prefix.shape[0]
    module.eval()
    nodes = torch.zeros(b, 1, dtype=torch.long)
    scores = torch.zeros(b, 1)
    logits, cache, pad = module.prefill(prefix)  # the history runs once per user, not per beam
    for level in range(module.n_tok):
        w = nodes.shape[1]
        logp = module.level_logits(logits, level)
        vocab = logp.shape[1]
        if module.repeat is not None and window is not None:
            seen = seen_fraction(trie, nodes.numpy(), window[0][:, :, level],
                                 window[1][:, :, level], vocab)
            logp = logp + repeat_penalty(torch.as_tensor(seen).reshape(b * w, vocab),
                                         module.repeat)
        allowed = trie.allowed(nodes.reshape(-1))[:, :vocab]
        logp = torch.log_softmax(logp.masked_fill(~allowed, float("-inf")), dim=-1)
        cand = (scores.reshape(-1, 1) + logp).reshape(b, w * vocab)
        k = min(beam, w * vocab)
        top, idx = torch.topk(cand, k, dim=1)
        parent, token = idx // vocab, idx % vocab
        parent_nodes = torch.gather(nodes, 1, parent)
        nodes = trie.step(parent_nodes.reshape(-1), token.reshape(-1)).reshape(b, k)
        dead = torch.isinf(top)
        nodes = nodes.masked_fill(dead, 0)
        scores = top
        if level + 1 < module.n_tok:  # reorder the cache to the surviving beams, then extend
            rows = (torch.arange(b)[:, None] * w + parent).reshape(-1)
            cache = [(kc[rows], vc[rows]) for kc, vc in cache]
            new_tok = module.token_ids(torch.zeros(module.n_tok, dtype=torch.long))[level] + token
            logits, cache, pad = module.step(new_tok.reshape(-1), cache, pad[rows])
    items = trie.items(nodes.numpy())
    items[torch.isinf(scores).numpy()] = -1
    return items, scores.numpy()


@RETRIEVAL_MODELS.register("tiger", params=TigerParams)
class Tiger(Retriever):
    """Generative retrieval: decoder over semantic-ID tokens + trie-constrained beam search."""

    name = "tiger"
    can_exclude_seen = False  # beam search returns K decoded IDs; masking would need more beams

    def __init__(self, params: TigerParams) -> None:
        self.params = params
        self.module: TigerModule | None = None
        self.trie: Trie | None = None
        self.cold_trie: Trie | None = None
        self.history: list[float] = []
        self.cold_share = params.cold_share or 0.0

    def _setup(self, sids: np.ndarray) -> None:
        sids = np.asarray(sids, dtype=np.int64)
        vocab_sizes = (sids[1:].max(axis=0) + 1).tolist()
        self.sid_table = torch.as_tensor(sids)
        self.module = TigerModule(vocab_sizes, self.params)
        self.trie = Trie(sids[1:], np.arange(1, len(sids)), max(vocab_sizes))

    def _index_cold(self, cold_items: np.ndarray) -> None:
        """A second trie over the items without training events (TIGER's cold-start set)."""
        self.cold_items = np.asarray(cold_items, dtype=np.int64)
        self.cold_trie = (Trie(self.sid_table.numpy()[self.cold_items], self.cold_items,
                               self.trie.next_node.shape[1]) if len(self.cold_items) else None)

    def fit(self, data: RetrievalData) -> Tiger:
        if data.semantic_ids is None:
            raise ValueError("tiger needs semantic IDs: run the semantic_ids pipeline "
                             "(dataset 'semantic_id_table') and name its tokenizer in YAML")
        p = self.params
        torch.manual_seed(data.seed)
        self._setup(self.token_table(data.semantic_ids))
        prefixes = np.unique(self.sid_table.numpy()[1:, :-1], axis=0, return_counts=True)[1]
        logger.info("tiger: %d items under %d code prefixes of %d tokens (up to %d per "
                    "prefix)", data.n_items, len(prefixes), self.module.n_tok - 1,
                    prefixes.max(initial=0))
        if data.cold_items is not None:
            self._index_cold(data.cold_items)
        else:  # no interaction log beyond the sequences: cold = never in a training sequence
            seen = np.zeros(data.n_items + 1, dtype=bool)
            if data.train_sequences:
                seen[np.concatenate(data.train_sequences)] = True
            self._index_cold(np.flatnonzero(~seen[1:]) + 1)
        self.cold_share = self._resolve_cold_share(data)
        m = self.module
        wins, _ = windows(data.train_sequences, p.max_items + 1)
        items = left_pad(wins, p.max_items + 1)  # (N, I): position p predicts item p // T
        seqs = history_tokens(m, self.sid_table, wins, p.max_items + 1)  # (N, 1 + I * T)
        spans = [(2 + int(o), v) for o, v in zip(m.offsets, m.vocab_sizes, strict=True)]
        earlier = np.tri(items.shape[1], k=-1, dtype=bool)  # window item i < target item j
        sids = self.sid_table.numpy()

        def step(idx: torch.Tensor) -> Step:
            inputs, targets = seqs[idx, :-1], seqs[idx, 1:]
            logits = m(inputs)  # position p predicts token p % T of item p // T
            seen = None if m.repeat is None else self._seen(items[idx.numpy()], sids, earlier)
            loss, n = logits.new_zeros(()), 0
            for t, (start, size) in enumerate(spans):  # cross-entropy among each level's codes
                target, level = targets[:, t::m.n_tok], logits[:, t::m.n_tok, start:start + size]
                if seen is not None:
                    level = level + repeat_penalty(seen[t], m.repeat)
                valid = target > 1
                loss = loss + F.cross_entropy(level[valid], target[valid] - start, reduction="sum")
                n += int(valid.sum())
            return Step(loss / max(n, 1), n)

        fit_retriever(self, data, epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay,
                      n_samples=len(seqs), batch_size=p.batch_size, step=step)
        return self

    def token_table(self, semantic_ids: np.ndarray) -> np.ndarray:
        """(n + 1, T) the IDs this model decodes: the first `code_levels` codes of the
        semantic IDs, then the item's own index (`item_token`) or the rank among the items
        sharing those codes (the disambiguation digit)."""
        sids = np.asarray(semantic_ids, dtype=np.int64)
        n_codes, levels = sids.shape[1] - 1, self.params.code_levels
        if levels is not None and levels > n_codes:
            raise ValueError(f"tiger: code_levels: {levels}, but the semantic IDs have "
                             f"{n_codes} code levels")
        if levels is None and not self.params.item_token:
            return sids
        if self.params.item_token and len(sids) > MAX_ITEM_TOKENS:
            gib = 8 * len(sids) ** 2 / 2**30  # >= n + 1 rows (leaves, root) of n + 1 int64s
            raise ValueError(f"tiger: item_token: true builds a dense trie of nodes x items, "
                             f"at least {gib:.0f} GiB for {len(sids) - 1:,} items; use "
                             f"item_token: false above {MAX_ITEM_TOKENS - 1:,} items")
        codes = sids[:, :levels or n_codes]
        last = np.zeros(len(sids), dtype=np.int64)
        last[1:] = (np.arange(1, len(sids)) if self.params.item_token
                    else disambiguate(codes[1:])[:, -1])
        return np.column_stack([codes, last])

    def _seen(self, items: np.ndarray, sids: np.ndarray, earlier: np.ndarray
              ) -> list[torch.Tensor]:
        """Per level, (B, I, vocab) float: the share of each token's items that come before
        the target in its window (`seen_fraction`, what `repeat_penalty` scales)."""
        nodes, codes = self.trie.window(items, sids)
        visible = np.broadcast_to(earlier, (len(items), *earlier.shape))
        return [torch.as_tensor(seen_fraction(self.trie, nodes[:, :, t], nodes[:, :, t],
                                              codes[:, :, t], v, visible))
                for t, v in enumerate(self.module.vocab_sizes)]

    @property
    def repeat_window(self) -> int:
        """How many latest history items the repeat bias applies to when recommending."""
        return self.params.repeat_window or self.params.max_items

    def repeat_items(self, histories: list[np.ndarray]) -> np.ndarray:
        """(B, W) the latest `repeat_window` (else `max_items`) items of each history, the
        ones the repeat bias applies to when recommending (0 = padding)."""
        return left_pad(histories, self.repeat_window)

    def _resolve_cold_share(self, data: RetrievalData) -> float:
        """`cold_share` as set, else the cold share of the validation targets."""
        if self.params.cold_share is not None:
            return self.params.cold_share
        if data.valid is None or not len(self.cold_items):
            return 0.0
        cold = set(self.cold_items.tolist())
        targets = [t for t in data.valid.targets if t]
        share = sum(len(t & cold) / len(t) for t in targets) / max(len(targets), 1)
        logger.info("tiger: cold_share %.3f (share of cold items among validation targets)",
                    share)
        return float(share)

    def recommend(self, histories: list[np.ndarray], k: int,
                  exclude: list[np.ndarray] | None = None, beam: int | None = None
                  ) -> np.ndarray:
        if exclude is not None:
            raise ValueError("tiger cannot exclude seen items (beam search decodes K IDs); "
                             "set exclude_seen: false for this model")
        beam = max(beam or self.params.beam_size, k)
        share = self.cold_share if self.cold_trie is not None else 0.0
        n_cold = int(np.floor(k * share))
        out = []
        for start in range(0, len(histories), 256):
            chunk = histories[start:start + 256]
            prefix = history_tokens(self.module, self.sid_table, chunk, self.params.max_items)
            window = self.repeat_items(chunk)
            sids = self.sid_table.numpy()
            items, _ = constrained_beam_search(self.module, self.trie, prefix, beam,
                                               self.trie.window(window, sids))
            if n_cold:  # the model's best cold items: the same decoder, under the cold trie
                cold, _ = constrained_beam_search(self.module, self.cold_trie, prefix,
                                                  max(n_cold, min(beam, len(self.cold_items))),
                                                  self.cold_trie.window(window, sids))
                items = merge_cold(items, cold, k, share)
            out.append(items[:, :k])
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)

    def state(self) -> dict[str, Any]:
        return {"state_dict": self.module.state_dict(), "semantic_ids": self.sid_table,
                "cold_items": torch.as_tensor(self.cold_items), "cold_share": self.cold_share}

    @classmethod
    def from_state(cls, params: TigerParams | dict[str, Any] | None, state: dict[str, Any]
                   ) -> Tiger:
        """Rebuild a fitted retriever from `state()`: trie and module from the semantic IDs."""
        p = coerce_params(TigerParams, params)
        model = cls(p)
        model._setup(np.asarray(state["semantic_ids"]))
        try:
            model.module.load_state_dict(state["state_dict"])
        except RuntimeError as exc:  # e.g. a pre-LN TIGER saved before the shared block
            first = str(exc).strip().splitlines()[0][:200]
            raise ValueError(f"tiger: the saved weights do not fit the model its params "
                             f"describe ({first}); it was written by another recflow "
                             "version: re-run the retrieval pipeline for this entry") from None
        model.module.eval()
        cold = state.get("cold_items")
        if cold is not None and hasattr(model, "_index_cold"):
            model._index_cold(np.asarray(cold))
        model.cold_share = float(state.get("cold_share", p.cold_share or 0.0))
        return model
