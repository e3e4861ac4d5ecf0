"""Feature preprocessing: typed config, fitted transforms and the FeatureSpec.

Imports neither torch nor Kedro, so the production scorer can reuse it.
"""

from recflow.features.config import FeaturesConfig
from recflow.features.spec import FeatureSpec, FieldSpec, sequence_columns

__all__ = ["FeatureSpec", "FeaturesConfig", "FieldSpec", "sequence_columns"]
