"""The typed `retrieval` block lives with the protocol it configures (`recflow.evaluation`).

Re-exported here because every pipeline's typed block is found as
`recflow.pipelines.<name>.params.<Name>Params` (the generated parameter reference).
"""

from recflow.evaluation.retrieval_params import RetrievalEntry, RetrievalParams, RetrievalTraining

__all__ = ["RetrievalEntry", "RetrievalParams", "RetrievalTraining"]
