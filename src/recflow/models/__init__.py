"""Model zoo. Importing this package registers every built-in model."""

from recflow.models import ranking  # noqa: F401  (registers built-ins)
from recflow.models.base import RankingModel, RankingModelProtocol

__all__ = ["RankingModel", "RankingModelProtocol"]
