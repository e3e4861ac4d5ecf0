"""Kedro's OmegaConfigLoader with envs as deltas of `conf/base` (settings.CONFIG_LOADER_CLASS).

With `merge_strategy: {parameters: soft}` an env's parameters are merged into base's key
by key at every depth (a list is replaced whole), so an env writes only what differs.
Kedro's default, `destructive`, replaces each top-level block whole: an env adding one
feature had to repeat the whole `preprocessing` block. Two rules make a delta complete:

* `_replace: true` inside a mapping: the env's mapping replaces the inherited one whole
  (a data-specific env's `dataset` declaration, its feature list, its model list).
* `null` where base has a mapping drops it (`ranking.models.din: null`). On a scalar or
  a list `null` stays YAML's null, which the typed blocks read as "none / off"
  (`export.latency.threads: null`); dropping it would bring back the default instead.

Kedro resolves `${globals:...}` per side with the env's globals before merging, so base's
`${globals:out}` paths already point under the env's output root.
"""

from __future__ import annotations

from typing import Any

from kedro.config import OmegaConfigLoader

#: marker key: the mapping holding it replaces the inherited mapping instead of merging
REPLACE = "_replace"


def merge_delta(base: Any, delta: Any, path: str = "") -> Any:
    """`delta` layered on `base`: mappings merge, `_replace: true` and non-mappings win."""
    if not isinstance(delta, dict):
        return delta
    replace = delta.get(REPLACE, False)
    if not isinstance(replace, bool):
        raise ValueError(f"parameters: {path}{REPLACE}: expected true or false, got {replace!r}")
    merged = {} if replace or not isinstance(base, dict) else strip_markers(base)
    for key, value in delta.items():
        if key == REPLACE:
            continue
        if value is None and isinstance(merged.get(key), dict):
            del merged[key]  # null over an inherited mapping: drop it
        else:
            merged[key] = merge_delta(merged.get(key), value, f"{path}{key}.")
    return merged


def strip_markers(value: Any) -> Any:
    """`value` without `_replace` keys (a mapping with no base to replace)."""
    if isinstance(value, dict):
        return {k: strip_markers(v) for k, v in value.items() if k != REPLACE}
    if isinstance(value, list):
        return [strip_markers(v) for v in value]
    return value


def replacing(blocks: dict[str, Any]) -> dict[str, Any]:
    """Each top-level mapping of `blocks` marked `_replace: true`: for writing a whole,
    already merged config as an env (the benchmark's cells, tests) that must not merge."""
    return {k: {REPLACE: True, **v} if isinstance(v, dict) else v for k, v in blocks.items()}


class DeltaConfigLoader(OmegaConfigLoader):
    """OmegaConfigLoader whose `soft` merge applies `merge_delta` (settings.py opts
    `parameters` into it; catalog and the rest keep Kedro's per-entry replacement)."""

    @staticmethod
    def _soft_merge(config: dict[str, Any], env_config: dict[str, Any],
                    env_path: str | None = None) -> Any:
        # Kedro 1.7's hook for merge_strategy "soft" (tests/unit/test_config_loader.py pins it)
        return merge_delta(config, env_config)
