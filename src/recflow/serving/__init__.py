"""Production scoring: raw records -> fitted FeatureSpec transforms -> onnxruntime -> scores.

Imports neither torch nor Kedro (a test checks `sys.modules`), so a slim image
with onnxruntime, numpy, pandas and pydantic can serve a bundle:

    from recflow.serving import Scorer
    scorer = Scorer.from_bundle("data/07_model_output/serving/deepfm")
    scorer.score(records)            # (n, len(scorer.score_names)) probabilities

or over HTTP: `python -m recflow.serving data/07_model_output/serving/deepfm`.
"""

from recflow.serving.bundle import read_manifest, write_bundle
from recflow.serving.scorer import RecordError, Scorer

__all__ = ["RecordError", "Scorer", "read_manifest", "write_bundle"]
