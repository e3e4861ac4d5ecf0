"""CTR/CVR ranking models; importing this package registers each of them in MODELS."""

from recflow.models.ranking import autoint, dcnv2, din, dlrm, esmm, fm, lr, mlcc  # noqa: F401
