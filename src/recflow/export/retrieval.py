"""ONNX export of the retrieval models: query encoders, item matrices, TIGER's decoder step.

What each registered retriever exports (every graph: legacy tracer as in
`recflow.export.onnx_export`, dynamic ``batch`` axis, ``onnx.checker`` full check,
onnxruntime's offline optimiser, and a parity check of the exported *and* the
optimised graph against torch on a real batch of histories, ``ParityError`` with
the numbers above the tolerance):

* ``sasrec``: ``user_encoder`` graph, ``history`` (B, max_len) int64 item indices,
  left-padded with 0 -> ``user`` (B, d), the state after the last item; plus the
  item matrix (n_items + 1, d) float32 = the tied item embeddings (row i = item
  index i, row 0 zeros). ``user @ matrix.T`` are SASRec's logits, so an
  inner-product ANN index over the matrix reproduces ``recommend``; with
  ``repeat_bias`` (metadata ``repeat_bias``: the learned scalar, absent without) the caller
  adds it to the scores of the history's own items, which it holds.
* ``two_tower``: ``user_tower`` graph (same input) -> ``user`` (B, d) unit vectors;
  ``item_tower`` graph ``item`` (B,) catalogue index (0 or unknown = a new item:
  the OOV id row) + ``feature_<name>`` (B,) int64 codes per item feature ->
  ``item`` (B, d); plus the item matrix (the item tower over the catalogue).
* ``tiger``: ``decoder_step`` graph, ``tokens`` (B, L) + ``last`` (B,) -> ``logits``
  (B, V): next-token logits at position ``last``. L = the longest sequence beam
  search feeds (history prefix + T - 1 decoded tokens), right-padded: attention is
  causal, so tokens after ``last`` cannot change its logits (the shape is static
  because the traced attention bakes the sequence length). The semantic-ID table
  and the token layout go into the metadata (with ``repeat_bias``: the learned item-level
  scalar, and ``repeat_window``: how many latest history items it applies to);
  ``recflow.serving.generative`` runs the trie-constrained beam search
  over this graph with onnxruntime + numpy and applies that bias as training did.

Item matrices are plain ``.npy`` float32 (``recflow.datasets.NumpyArrayDataset``),
which faiss / hnswlib / ScaNN load with ``np.load``.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

import recflow
from recflow.export.checks import compare
from recflow.export.onnx_export import DEFAULT_OPSET, set_metadata
from recflow.export.runtime import OptimizationLevel, optimize_graph, session
from recflow.models.retrieval import RETRIEVAL_MODELS, Retriever
from recflow.models.retrieval.base import left_pad

EXPORTABLE = ("sasrec", "two_tower", "tiger")


def retriever_from_payload(payload: dict[str, Any]) -> Retriever:
    """A fitted retriever from a `retrieval.{name}.model` payload (its class's `from_state`)."""
    component = RETRIEVAL_MODELS.get(payload["model"])
    rebuild = getattr(component.target, "from_state", None)
    if rebuild is None:
        raise TypeError(f"retrieval model '{payload['model']}' cannot be rebuilt from a "
                        "payload: its class has no from_state(params, state)")
    params = component.validate_params(payload.get("params"), where="payload params")
    return rebuild(params, payload["state_dict"])


def trace(module: nn.Module, inputs: dict[str, torch.Tensor], outputs: list[str], *,
          opset: int = DEFAULT_OPSET, dynamic: dict[str, dict[int, str]] | None = None,
          doc: str = "", metadata: dict[str, Any] | None = None) -> onnx.ModelProto:
    """`module(*inputs.values())` traced to a checked ONNX graph (batch axis 0 dynamic)."""
    module.eval()
    names = list(inputs)
    axes = dynamic or {n: {0: "batch"} for n in [*names, *outputs]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False, on purpose
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, tuple(inputs.values()), buffer, dynamo=False,
                          opset_version=opset, input_names=names, output_names=outputs,
                          dynamic_axes=axes, do_constant_folding=True)
    module.eval()
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    proto.producer_name, proto.producer_version = "recflow", recflow.__version__
    proto.doc_string = doc
    set_metadata(proto, {"recflow_version": recflow.__version__, "opset": opset,
                         "input_names": names, "output_names": outputs, **(metadata or {})})
    return proto


def _checked(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], want: np.ndarray, *,
             tolerance: float, level: OptimizationLevel, name: str, what: str
             ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Parity of the exported and of the optimised graph; returns (optimised graph, report)."""
    raw = compare(session(proto, level="disabled").run(None, feeds)[0], want,
                  tolerance=tolerance, name=name, what=what, rows_label="histories")
    optimised = optimize_graph(proto, level)
    opt = compare(session(optimised).run(None, feeds)[0], want, tolerance=tolerance,
                  name=name, what=what, rows_label="histories")
    return optimised, {"max_abs_diff": opt["max_abs_diff"], "mean_abs_diff": opt["mean_abs_diff"],
                       "max_abs_diff_unoptimized": raw["max_abs_diff"], "rows": opt["rows"],
                       "onnx_bytes": optimised.ByteSize()}


def _ann_check(user: np.ndarray, want_user: np.ndarray, matrix: np.ndarray, k: int
               ) -> dict[str, float]:
    """The ANN side: scores = user vectors x item matrix, onnxruntime users vs torch users.

    `top{k}_agreement`: share of rows whose onnxruntime top-k is also a torch top-k (its
    items' torch scores equal torch's k best within 1e-5: items with identical vectors,
    e.g. cold items sharing all features, tie and may come in either order).
    """
    got = user.astype(np.float64) @ matrix[1:].T.astype(np.float64)
    want = want_user.astype(np.float64) @ matrix[1:].T.astype(np.float64)
    k = min(k, got.shape[1])
    top = np.argsort(-got, axis=1, kind="stable")[:, :k]
    best = -np.sort(-want, axis=1)[:, :k]
    mine = -np.sort(-np.take_along_axis(want, top, axis=1), axis=1)
    same = np.abs(mine - best).max(axis=1) <= 1e-5 if len(got) else np.zeros(0, bool)
    return {"score_max_abs_diff": float(np.abs(got - want).max()) if got.size else 0.0,
            f"top{k}_agreement": float(same.mean()) if len(same) else 1.0}


class _UserEncoder(nn.Module):
    """history -> `module.<method>(history)`, the module registered so its weights trace."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.m, self.method = module, method

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return getattr(self.m, self.method)(history)


def export_sasrec(model: Any, histories: list[np.ndarray], *, name: str = "sasrec",
                  opset: int = DEFAULT_OPSET, tolerance: float = 1e-5,
                  level: OptimizationLevel = "basic", k: int = 10) -> dict[str, Any]:
    """{"user_encoder": ModelProto, "item_vectors": (n_items + 1, d) float32, "report": dict}."""
    m = model.module.eval()
    wrapper = _UserEncoder(m, "user_embedding").eval()
    max_len = model.params.max_len
    hist = left_pad(histories, max_len)
    with torch.no_grad():
        want = m.user_embedding(torch.as_tensor(hist)).numpy()
    matrix = model.item_matrix()
    repeat = None if m.repeat is None else float(m.repeat.detach())
    rule = "" if repeat is None else f" + repeat_bias ({repeat:.4f}) for items in the history"
    proto = trace(wrapper, {"history": torch.as_tensor(_example(hist))}, ["user"], opset=opset,
                  doc=f"recflow retrieval '{name}' (sasrec): history (B, {max_len}) item indices, "
                      f"left-padded with 0 -> user (B, d); score = user @ item_vectors.T{rule}",
                  metadata={"model_name": name, "registered_model": "sasrec",
                            "max_len": max_len, "n_items": len(matrix) - 1,
                            "item_vectors": "item_vectors.npy: row i = item index i, row 0 zeros",
                            "graph_optimization": level,
                            **({} if repeat is None else {"repeat_bias": repeat})})
    optimised, rep = _checked(proto, {"history": hist}, want, tolerance=tolerance, level=level,
                              name=name, what="user vectors")
    user = session(optimised).run(None, {"history": hist})[0]
    rep.update(model="sasrec", opset=opset, graph_optimization=level, tolerance=tolerance,
               graphs={"user_encoder": dict(rep)}, item_vectors_shape=list(matrix.shape),
               **_ann_check(user, want, matrix, k))
    return {"user_encoder": optimised, "item_vectors": matrix, "report": rep}


class _ItemTower(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.m = module

    def forward(self, item: torch.Tensor, *codes: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(codes, dim=1) if codes else item.new_zeros(len(item), 0)
        return self.m.item_tower(item, stacked)


def export_two_tower(model: Any, histories: list[np.ndarray], *, name: str = "two_tower",
                     opset: int = DEFAULT_OPSET, tolerance: float = 1e-5,
                     level: OptimizationLevel = "basic", k: int = 10) -> dict[str, Any]:
    """{"user_tower", "item_tower": ModelProto, "item_vectors": (n_items + 1, d), "report"}."""
    m = model.module.eval()
    max_len = model.params.max_len
    hist = left_pad(histories, max_len)
    with torch.no_grad():
        want_user = m.user(torch.as_tensor(hist)).numpy()
    matrix = model.item_vectors().numpy().astype(np.float32)
    meta = {"model_name": name, "registered_model": "two_tower", "max_len": max_len,
            "n_items": int(m.n_items), "features": list(model.feature_names),
            "feature_vocab": list(m.feature_vocab), "graph_optimization": level}
    user_proto = trace(_UserEncoder(m, "user").eval(), {"history": torch.as_tensor(_example(hist))},
                       ["user"], opset=opset, metadata=meta,
                       doc=f"recflow retrieval '{name}' (two_tower) user tower: history "
                           f"(B, {max_len}) item indices, left-padded with 0 -> unit vectors")
    user_opt, user_rep = _checked(user_proto, {"history": hist}, want_user, tolerance=tolerance,
                                  level=level, name=name, what="user vectors")

    items = np.arange(1, m.n_items + 1, dtype=np.int64)
    codes = m.codes[1:].numpy()
    feat_names = [f"feature_{f}" for f in model.feature_names]
    feeds = {"item": items, **{n: np.ascontiguousarray(codes[:, f])
                               for f, n in enumerate(feat_names)}}
    example = {key: torch.as_tensor(value[:3]) for key, value in feeds.items()}
    item_proto = trace(_ItemTower(m).eval(), example, ["item_vector"], opset=opset,
                       metadata={**meta, "oov": "item index 0 or outside 1..n_items -> OOV id "
                                                "row (a new item: its vector from features)"},
                       doc=f"recflow retrieval '{name}' (two_tower) item tower: item (B,) index + "
                           f"{len(feat_names)} feature codes (B,) each (0 = unknown) -> vectors")
    item_opt, item_rep = _checked(item_proto, feeds, matrix[1:], tolerance=tolerance,
                                  level=level, name=name, what="item vectors")
    user = session(user_opt).run(None, {"history": hist})[0]
    rep = {"model": "two_tower", "opset": opset, "graph_optimization": level,
           "tolerance": tolerance, "rows": user_rep["rows"],
           "max_abs_diff": max(user_rep["max_abs_diff"], item_rep["max_abs_diff"]),
           "max_abs_diff_unoptimized": max(user_rep["max_abs_diff_unoptimized"],
                                           item_rep["max_abs_diff_unoptimized"]),
           "graphs": {"user_tower": user_rep, "item_tower": item_rep},
           "item_vectors_shape": list(matrix.shape), "features": list(model.feature_names),
           **_ann_check(user, want_user, matrix, k)}
    return {"user_tower": user_opt, "item_tower": item_opt, "item_vectors": matrix,
            "report": rep}


class _TigerStep(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.m = module

    def forward(self, tokens: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        logits = self.m(tokens)  # (B, L, V)
        index = last.view(-1, 1, 1).expand(-1, 1, logits.shape[2])
        return logits.gather(1, index).squeeze(1)


def tiger_layout(model: Any) -> dict[str, Any]:
    """What the runtime needs besides the graph (stored in the step graph's metadata)."""
    m = model.module
    layout = {"semantic_ids": model.sid_table.tolist(), "vocab_sizes": list(m.vocab_sizes),
              "offsets": m.offsets.tolist(), "n_tok": int(m.n_tok), "total": int(m.total),
              "max_items": int(model.params.max_items), "beam_size": int(model.params.beam_size),
              "length": 1 + (model.params.max_items + 1) * int(m.n_tok) - 1}
    if getattr(m, "repeat", None) is not None:
        layout["repeat_bias"] = float(m.repeat.detach())
        layout["repeat_window"] = int(model.repeat_window)
    cold = getattr(model, "cold_items", None)
    if cold is not None and getattr(model, "cold_trie", True) is not None:
        layout["cold_items"] = np.asarray(cold).tolist()
        layout["cold_share"] = float(getattr(model, "cold_share", 0.0))
    return layout


def export_tiger(model: Any, histories: list[np.ndarray], *, name: str = "tiger",
                 opset: int = DEFAULT_OPSET, tolerance: float = 1e-5,
                 level: OptimizationLevel = "basic", beam_rows: int = 128, k: int = 10
                 ) -> dict[str, Any]:
    """{"decoder_step": ModelProto, "report": dict}; the report compares the onnxruntime beam
    search (`recflow.serving.generative`) with torch's on `beam_rows` histories."""
    from recflow.models.retrieval.tiger import constrained_beam_search, history_tokens
    from recflow.serving.generative import GenerativeRetriever

    m = model.module.eval()
    layout = tiger_layout(model)
    prefix = history_tokens(m, model.sid_table, histories, model.params.max_items).numpy()
    width = prefix.shape[1]
    # every position beam search reads: the prefix's last token, then after each of the
    # first T - 1 decoded tokens (here the semantic ID of a random catalogue item)
    codes = model.sid_table.numpy()[np.random.default_rng(0).integers(
        1, len(model.sid_table), size=len(prefix))]
    base = np.zeros((len(prefix), layout["length"]), dtype=np.int64)
    base[:, :width] = prefix
    stacks, lasts = [], []
    for level_ in range(m.n_tok):
        rows_ = base.copy()
        for j in range(level_):
            rows_[:, width + j] = 2 + int(m.offsets[j]) + codes[:, j]
        stacks.append(rows_)
        lasts.append(np.full(len(prefix), width - 1 + level_, dtype=np.int64))
    tokens, step_last = np.concatenate(stacks), np.concatenate(lasts)
    with torch.no_grad():
        want = _TigerStep(m).eval()(torch.as_tensor(tokens), torch.as_tensor(step_last)).numpy()
    example = {"tokens": torch.as_tensor(_example(tokens)),
               "last": torch.as_tensor(_example(step_last))}
    proto = trace(_TigerStep(m).eval(), example, ["logits"], opset=opset,
                  metadata={"model_name": name, "registered_model": "tiger",
                            "graph_optimization": level, **layout},
                  doc=f"recflow retrieval '{name}' (tiger) decoder step: tokens (B, "
                      f"{layout['length']}) right-padded + last (B,) -> next-token logits at "
                      "`last`; run by recflow.serving.generative.GenerativeRetriever")
    optimised, rep = _checked(proto, {"tokens": tokens, "last": step_last}, want,
                              tolerance=tolerance, level=level, name=name, what="step logits")
    rows = histories[:beam_rows]
    runtime = GenerativeRetriever(optimised)
    beam = max(model.params.beam_size, k)
    started = time.perf_counter()
    got, _ = runtime.search(runtime.history_tokens(rows), beam, window=runtime.window(rows))
    ort_seconds = time.perf_counter() - started
    started = time.perf_counter()
    want_items, _ = constrained_beam_search(
        m, model.trie, history_tokens(m, model.sid_table, rows, model.params.max_items), beam,
        model.trie.window(model.repeat_items(rows), model.sid_table.numpy()))
    torch_seconds = time.perf_counter() - started
    same = [np.array_equal(a[:k], b[:k]) for a, b in zip(got, want_items, strict=True)]
    served = runtime.recommend(rows, k)
    offline = model.recommend(rows, k)
    rep.update(model="tiger", opset=opset, graph_optimization=level, tolerance=tolerance,
               graphs={"decoder_step": {k_: v for k_, v in rep.items()}},
               sequence_length=layout["length"], beam=beam, beam_rows=len(rows),
               cold_items=len(layout.get("cold_items", [])),
               **{f"beam_top{k}_identical": float(np.mean(same)) if same else None,
                  f"recommend_top{k}_identical": float(np.mean(
                      [np.array_equal(a, b) for a, b in zip(served, offline, strict=True)]))
                  if len(rows) else None},
               beam_seconds_onnxruntime=round(ort_seconds, 3),
               beam_seconds_torch=round(torch_seconds, 3))
    return {"decoder_step": optimised, "report": rep}


def export_retriever(payload: dict[str, Any], histories: list[np.ndarray], *, name: str,
                     opset: int = DEFAULT_OPSET, tolerance: float = 1e-5,
                     level: OptimizationLevel = "basic") -> dict[str, Any]:
    """Dispatch on the payload's registered model; the dict's keys depend on the model."""
    kind = payload["model"]
    if kind not in EXPORTABLE:
        raise ValueError(f"retrieval model '{kind}' has no export; exportable: {EXPORTABLE}")
    if not histories:
        raise ValueError(f"retrieval entry '{name}': no test histories to check parity on")
    model = retriever_from_payload(payload)
    started = time.perf_counter()
    export = {"sasrec": export_sasrec, "two_tower": export_two_tower,
              "tiger": export_tiger}[kind]
    out = export(model, histories, name=name, opset=opset, tolerance=tolerance, level=level)
    out["report"]["export_seconds"] = round(time.perf_counter() - started, 3)
    out["report"] = json.loads(json.dumps(out["report"], default=float))
    return out


def _example(rows: np.ndarray, n: int = 3) -> np.ndarray:
    """A few real rows (cycled) to trace with: batch > 1 so no batch-1 shape is baked in."""
    return np.ascontiguousarray(rows[np.arange(n) % max(len(rows), 1)])
