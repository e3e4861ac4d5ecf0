"""FinalMLP for recflow: installing this package is all it takes to use `name: finalmlp`.

recflow finds the model through the entry point declared in pyproject.toml
(group `recflow.models`); nothing here registers anything at import time.
"""

from recflow_finalmlp.model import FinalMLP, FinalMLPParams, MultiHeadBilinearFusion

__version__ = "0.1.0"
__all__ = ["FinalMLP", "FinalMLPParams", "MultiHeadBilinearFusion", "__version__"]
