"""Every registry of recflow, and the API to extend them.

    from recflow.registry import MODELS
    MODELS.list("dcn*"); MODELS.create("deepfm", spec, params={"embed_dim": 16})

`ALL` lists the kinds; `recflow list` and the generated model reference walk it. Each
registry imports its built-ins on first use, then loads its entry-point group
(`recflow.registry.entry_points`, docs/plugins.md). Each kind's contract (a
`typing.Protocol`) is set by the package defining the kind, beside its base class; the
registry class itself (`recflow.registry.core`) imports nothing of recflow.
"""

from recflow.registry.core import (
    Component,
    Contract,
    Registry,
    RegistryError,
    protocol_members,
    schema_fields,
)
from recflow.registry.entry_points import (
    PluginRecord,
    PluginWarning,
    load_plugins,
    normalize_dist,
    plugin_records,
)

MODELS = Registry("models", builtins="recflow.models", plugin_group="recflow.models",
                  loader=load_plugins)
RETRIEVAL_MODELS = Registry("retrieval_models", builtins="recflow.models.retrieval",
                            plugin_group="recflow.retrieval_models", loader=load_plugins)
TOKENIZERS = Registry("tokenizers", builtins="recflow.tokenization.quantizers",
                      plugin_group="recflow.tokenizers", loader=load_plugins)
ITEM_ENCODERS = Registry("item_encoders", builtins="recflow.tokenization.encoders",
                         plugin_group="recflow.item_encoders", loader=load_plugins)
LOSSES = Registry("losses", builtins="recflow.training.distillation",
                  plugin_group="recflow.losses", loader=load_plugins)

#: (title, registry) of every kind, in the order listings and the reference show them
ALL: tuple[tuple[str, Registry], ...] = (
    ("Ranking models", MODELS), ("Retrieval models", RETRIEVAL_MODELS),
    ("Tokenizers", TOKENIZERS), ("Item encoders", ITEM_ENCODERS), ("Losses", LOSSES))

__all__ = ["ALL", "ITEM_ENCODERS", "LOSSES", "MODELS", "RETRIEVAL_MODELS", "TOKENIZERS",
           "Component", "Contract", "PluginRecord", "PluginWarning", "Registry", "RegistryError",
           "load_plugins", "normalize_dist", "plugin_records", "protocol_members", "schema_fields"]
