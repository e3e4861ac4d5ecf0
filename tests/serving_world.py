"""Two exported serving bundles over small embedded data, built by the real nodes (tests only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from recflow.datasets.onnx_model import ServingBundleDataset
from recflow.datasets.synthetic import GeneratorConfig, generate
from recflow.export.checks import torch_scores
from recflow.export.onnx_export import model_input_schema
from recflow.export.params import ExportParams
from recflow.features import FeaturesConfig, FeatureSpec
from recflow.features.records import raw_records
from recflow.models.payload import to_payload
from recflow.pipelines.export import nodes as export_nodes
from recflow.pipelines.preprocessing import nodes as prep
from recflow.registry import MODELS
from recflow.serving.schema import feeds_from_frame
from tests.helpers import embedded_declaration, embedded_events

REPO = Path(__file__).resolve().parents[1]
FAST = ExportParams.model_validate({"quantize": False,
                                    "latency": {"batches": [1], "repeats": 2, "warmup": 0}})


def build_serving_world(root: Path) -> dict[str, Any]:
    """Small raw data, preprocessed by the real nodes; two exported models as bundles."""
    tables = generate(GeneratorConfig(n_users=80, n_items=120, n_impressions=4000, seed=3))
    events = embedded_events(tables.interactions, tables.users, tables.items)
    config = FeaturesConfig.model_validate(yaml.safe_load(
        (REPO / "conf/base/parameters_preprocessing.yml").read_text())["preprocessing"])
    spec_dict = prep.fit_feature_spec(events, prep.split_by_time(events, config), config,
                                      embedded_declaration())
    spec = FeatureSpec.from_dict(spec_dict)
    test = prep.transform_test(events, spec_dict)
    models = {}
    for name, model_name, params in (
        ("din", "din", {"embed_dim": 4, "hidden": [16]}),  # every field + target attention
        ("small", "deepfm", {"embed_dim": 4, "hidden": [8],  # a subset, one sequence
                             "fields": ["item_id", "price", "hist_subcategory"]}),
    ):
        torch.manual_seed(0)
        typed = MODELS.get(model_name).validate_params(params)
        model = MODELS.create(model_name, spec, params=typed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)  # spread the scores of the untrained model
        model.eval()
        payload = to_payload(model, model_name, typed, spec, extra={"name": name})
        _, bundle, _ = export_nodes.export_model(payload, spec_dict, test, {"auc": 0.5}, FAST)
        ServingBundleDataset(str(root / name)).save(bundle)
        offline = torch_scores(model, feeds_from_frame(test, model_input_schema(model, spec)))
        models[name] = {"bundle": root / name, "offline": offline, "model": model}
    return {"spec": spec, "spec_dict": spec_dict, "records": raw_records(events, spec),
            "test": test, "models": models, "root": root}


