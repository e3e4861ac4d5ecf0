"""Teacher -> student distillation (offline cached logits or online), with the plain-student ablation."""

from recflow.pipelines.distillation.params import pipeline_kwargs
from recflow.pipelines.distillation.pipeline import create_pipeline

__all__ = ["create_pipeline", "pipeline_kwargs"]
