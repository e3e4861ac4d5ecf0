"""Item encoders, residual quantisers (RQ-KMeans, RQ-VAE), semantic-ID tables and their trie.

Names resolve lazily (PEP 562), so `recflow.tokenization.trie` and `.semantic_ids`
(numpy only) import without torch: the serving runtime for generative retrieval uses
the trie. The registries import `encoders` / `quantizers` for their built-ins.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "item_text": "encoders", "ItemEncoderProtocol": "encoders",
    "RQVAE": "quantizers", "ResidualTokenizer": "quantizers", "RQKMeans": "quantizers",
    "TokenizerProtocol": "quantizers",
    "SemanticIdTable": "semantic_ids", "collision_rate": "semantic_ids",
    "disambiguate": "semantic_ids", "perplexity": "semantic_ids",
    "prefix_purity": "semantic_ids", "utilization": "semantic_ids",
    "TrieTable": "trie", "merge_cold": "trie", "repeat_tokens": "trie",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'recflow.tokenization' has no attribute '{name}'")
    return getattr(importlib.import_module(f"recflow.tokenization.{_WHERE[name]}"), name)
