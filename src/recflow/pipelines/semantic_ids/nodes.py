"""semantic_ids nodes: item text/interactions -> vectors -> residual codes -> unique IDs + report."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recflow.evaluation.retrieval_params import RetrievalParams
from recflow.pipelines.semantic_ids.params import SemanticIdsParams, TokenizerEntry
from recflow.registry import TOKENIZERS
from recflow.tokenization.encoders import encoder_needs_events
from recflow.tokenization.semantic_ids import SemanticIdTable, code_metrics

logger = logging.getLogger(__name__)
EMB_PREFIX = "e_"


def embeddings_matrix(frame: pd.DataFrame) -> np.ndarray:
    cols = [c for c in frame.columns if c.startswith(EMB_PREFIX)]
    return frame[cols].to_numpy(np.float32)


def encode_items(items: pd.DataFrame, params: SemanticIdsParams,
                 interactions: pd.DataFrame | None = None, cutoffs: dict | None = None,
                 retrieval: RetrievalParams | None = None) -> pd.DataFrame:
    """raw_items -> item_id + e_000.. columns from the configured item encoder.

    An encoder with `needs_events` (e.g. `cooccurrence`) learns only from the events the
    retrieval models train on (`training_events`): never a user's validation or test items,
    so the semantic IDs TIGER decodes carry no leak of the evaluation targets.
    """
    name = params.encoder.name
    encoder = params.encoder.create(where="parameters_semantic_ids.yml: encoder.params")
    items = items.sort_values("item_id").reset_index(drop=True)
    if encoder_needs_events(name):
        if interactions is None or cutoffs is None or retrieval is None:
            raise ValueError(f"item encoder '{name}' learns from interactions: build the "
                             "semantic_ids pipeline with create_pipeline(**pipeline_kwargs("
                             "params)) so encode_items reads interactions, split_cutoffs and "
                             "params:retrieval")
        from recflow.evaluation.retrieval_protocol import training_events

        x = encoder.fit_transform(items, events=training_events(interactions, cutoffs, retrieval))
    else:
        x = encoder.fit_transform(items)
    frame = pd.DataFrame(x, columns=[f"{EMB_PREFIX}{i:03d}" for i in range(x.shape[1])])
    frame.insert(0, "item_id", items["item_id"].to_numpy())
    logger.info("encoded %d items with %s into %d dims", len(items), name, x.shape[1])
    return frame


def fit_tokenizer(embeddings: pd.DataFrame, items: pd.DataFrame, entry: TokenizerEntry,
                  params: SemanticIdsParams) -> tuple[dict[str, Any], pd.DataFrame, dict]:
    """Fit one tokenizer; return its payload, the unique semantic-ID table and its metrics."""
    x = embeddings_matrix(embeddings)
    tok = entry.create()
    tok.fit(x)
    codes = tok.encode(x)
    table = SemanticIdTable.build(embeddings["item_id"].to_numpy(), codes, tok.codebook_size)
    labels = items.set_index("item_id").reindex(embeddings["item_id"])
    metrics = {"tokenizer": entry.name, "levels": tok.levels,
               "codebook_size": tok.codebook_size,
               **code_metrics(codes, table, tok.codebook_size, labels, params.purity_columns),
               "reconstruction_error": tok.reconstruction_errors(x)}
    payload = {"model": entry.name, "params": entry.params, "state_dict": tok.state(),
               "feature_spec_hash": None}
    logger.info("%s: collisions %.3f -> %.3f, utilisation %s", entry.name,
                metrics["collision_rate_before"], metrics["collision_rate"],
                [round(u, 3) for u in metrics["utilization"]])
    return payload, table.to_frame(), metrics


def fit_entry(embeddings: pd.DataFrame, items: pd.DataFrame, params: SemanticIdsParams, *,
              name: str) -> tuple[dict[str, Any], pd.DataFrame, dict]:
    """`fit_tokenizer` for the entry `semantic_ids.tokenizers.<name>`.

    Reads the whole typed block (what Kedro validates) and looks the entry up by name:
    see `recflow.pipelines.semantic_ids.pipeline` for why the entry is not bound alone.
    """
    if name not in params.tokenizers:
        raise KeyError(f"parameters_semantic_ids.yml: semantic_ids.tokenizers has no "
                       f"entry '{name}'; entries: {sorted(params.tokenizers)}")
    return fit_tokenizer(embeddings, items, params.tokenizers[name], params)


def load_tokenizer(payload: dict[str, Any]):
    """Rebuild a fitted tokenizer from its saved payload (encodes new items, no refit)."""
    tok = TOKENIZERS.create(payload["model"], params=payload["params"])
    return tok.load_state(payload["state_dict"])


def usage_figure(metrics: dict[str, dict]) -> Figure:
    """Sorted code usage per level, one panel per tokenizer (flat = well-used codebook)."""
    fig = Figure(figsize=(5 * len(metrics), 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, (name, m) in zip(axes, metrics.items(), strict=True):
        for lv, counts in enumerate(m["usage"]):
            ax.plot(np.sort(counts)[::-1], label=f"level {lv + 1} (util {m['utilization'][lv]:.2f})")
        ax.set_title(f"{name}: items per code")
        ax.set_xlabel("code rank")
        ax.set_ylabel("items")
        ax.set_yscale("symlog")
        ax.legend()
    return fig


def report_semantic_ids(**metrics: dict) -> tuple[dict[str, Any], Figure]:
    """The report contract (pinned by the tests): {"tokenizers": {NAME: {levels, codebook_size, collision_rate_before,
    collision_rate, utilization, ...}}} plus the code-usage plot."""
    report = {"tokenizers": {name.removeprefix("metrics__"): {k: v for k, v in m.items()
                                                              if k != "usage"}
                             for name, m in metrics.items()}}
    plot = usage_figure({name.removeprefix("metrics__"): m for name, m in metrics.items()})
    return report, plot
