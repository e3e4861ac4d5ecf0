"""Item encoders, residual quantisers (RQ-KMeans, RQ-VAE) and semantic-ID tables.

Importing this package registers the built-in item encoders and tokenizers.
"""

from recflow.tokenization import encoders, quantizers  # noqa: F401  (registers built-ins)
from recflow.tokenization.encoders import item_text
from recflow.tokenization.quantizers import RQVAE, ResidualTokenizer, RQKMeans
from recflow.tokenization.semantic_ids import (
    SemanticIdTable,
    collision_rate,
    disambiguate,
    perplexity,
    prefix_purity,
    utilization,
)

__all__ = [
    "RQKMeans",
    "RQVAE",
    "ResidualTokenizer",
    "SemanticIdTable",
    "collision_rate",
    "disambiguate",
    "item_text",
    "perplexity",
    "prefix_purity",
    "utilization",
]
