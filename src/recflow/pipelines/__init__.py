"""One folder per Kedro pipeline: `nodes.py` (pure functions) + `pipeline.py` (wiring).

Fan-out follows one scheme: a YAML entry `<entry>` of a pipeline's block is the Kedro
namespace `<pipeline>.<entry>` of its nodes and datasets (`ranking.<entry>`, exported as
`export.<entry>`; `retrieval.<entry>`; `semantic_ids.<entry>`), so its catalog
names are `<namespace>.<artifact>` (dataset factories in conf/base/catalog*.yml),
`--namespaces <namespace>` runs one entry and kedro-viz groups it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any


def with_entry_name(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`func` with its `name=` keyword bound to the YAML entry it runs for.

    For nodes that need the entry's *name* (a checkpoint folder, a metrics label, the
    ONNX metadata): Kedro's `params:` inputs carry values, and no parameter holds the key
    an entry sits under. `functools.update_wrapper` (what Kedro's own warning on partial
    nodes recommends) gives the partial `func`'s `__name__`, docstring, annotations and
    `__wrapped__`: Kedro's typed-parameter validation reads `func`'s own type hints, its
    input check binds to the partial's signature (`name` already bound), and kedro-viz
    shows `func`'s name and source. Nothing is copied by hand.
    """
    return update_wrapper(partial(func, name=name), func)
