"""Fail early, saying what to do, when a run's input files are not there.

Without this a newcomer who has no data (or runs `--namespaces=ranking.din` before preprocessing)
gets a `FileNotFoundError` traceback from deep inside a dataset, after other nodes ran.
`MissingInputsHook` checks every file input of the pipeline before any node runs and names
each missing dataset, its path and the command that creates it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from kedro.framework.hooks import hook_impl

from recflow.datasets.declaration import DatasetDeclaration
from recflow.hooks.runs import dataset_filepath

#: canonical tables the preprocessing pipeline prepares when the declaration has them
DECLARED_TABLES = {
    "items": "an item catalogue (dataset.events.item, optionally a dataset.items table)",
    "users": "a users table (dataset.users)",
    "interactions": "the event log (dataset.events)",
}


def _declared(catalog: Any, table: str) -> bool:
    """Whether the active dataset declaration provides a canonical table."""
    try:
        decl = DatasetDeclaration.model_validate(catalog.load("params:dataset"))
    except Exception:  # noqa: BLE001 - no valid declaration: nothing to add here
        return True
    if table == "items":
        return "item" in decl.roles
    return table != "users" or decl.users is not None


logger = logging.getLogger(__name__)


class MissingInputError(FileNotFoundError):
    """A pipeline input file does not exist; the message says how to create it."""


#: namespaced per-entry datasets (`<pipeline>.<entry>.<artifact>`) -> the pipeline writing them
ENTRY_PIPELINES = ("ranking", "retrieval", "semantic_ids")


def advice(path: Path, name: str = "") -> str:
    """The command that creates the missing file at `path` (catalog entry `name`)."""
    pipeline, _, rest = name.partition(".")
    if pipeline in ENTRY_PIPELINES and "." in rest:
        entry = rest.rpartition(".")[0]
        return (f"run its entry first: `kedro run --pipelines={pipeline} "
                f"--namespaces={pipeline}.{entry}` (same --env)")
    text = path.as_posix()
    if "01_raw/movielens" in text:
        return "fetch MovieLens-100K first: `recflow fetch-movielens` (docs/movielens.md)"
    if "01_raw" in text:
        return ("the embedded raw data is missing: restore data/01_raw/ from git, or "
                "regenerate it with `recflow generate` (docs/data.md)")
    if "05_model_input" in text or "02_intermediate" in text or "03_primary" in text:
        return "run preprocessing first: `kedro run --pipelines=preprocessing` (same --env)"
    if "06_models" in text:
        return "train first: `kedro run --pipelines=ranking` (same --env)"
    return "run the pipeline that writes it first (see `kedro registry describe`)"


def partially_overridden(conf_source: Path, env: str, declared: list[str]) -> list[str]:
    """Declared catalog entries an env leaves to conf/base while it redefines others."""
    defined: set[str] = set()
    for path in sorted((conf_source / env).glob("**/catalog*.yml")):
        defined |= set(yaml.safe_load(path.read_text()) or {})
    own = [d for d in declared if d in defined]
    return [d for d in declared if d not in defined] if own else []


class MissingInputsHook:
    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Warn when an env swaps some raw tables but silently inherits the others."""
        loader = context.config_loader  # not context.params: that would load the pipelines
        try:
            decl = DatasetDeclaration.model_validate(loader["parameters"].get("dataset") or {})
        except Exception:  # noqa: BLE001 - the pipelines report a bad declaration
            return
        if not loader.env or loader.env == loader.base_env:
            return
        entries = decl.events.catalog_entries() + [
            t.table for t in (decl.users, decl.items) if t is not None]
        inherited = partially_overridden(Path(loader.conf_source), loader.env, entries)
        if inherited:
            logger.warning(
                "env '%s' redefines some of the dataset's catalog entries but not %s: those "
                "still come from conf/%s (the embedded data); define them in conf/%s/ or "
                "remove them from parameters_dataset.yml", loader.env, inherited,
                loader.base_env, loader.env)

    @hook_impl
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        missing = []
        for name in sorted(pipeline.inputs()):
            if name == "parameters" or name.startswith("params:"):
                continue
            path = dataset_filepath(catalog, name)
            if name in DECLARED_TABLES and not _declared(catalog, name):
                missing.append(f"  - dataset '{name}': this pipeline needs "
                               f"{DECLARED_TABLES[name]}, which the dataset declaration "
                               "(parameters_dataset.yml) does not provide")
                continue
            if path is not None and not path.exists():
                missing.append(f"  - dataset '{name}': {path} does not exist; {advice(path, name)}")
        if missing:
            raise MissingInputError(
                "Cannot start the run, input data is missing:\n" + "\n".join(missing))
