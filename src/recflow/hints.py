"""Fail early, saying what to do, when a run's input files are not there.

Without this a newcomer who has no data (or runs `--namespaces=din` before preprocessing)
gets a `FileNotFoundError` traceback from deep inside a dataset, after other nodes ran.
`MissingInputsHook` checks every file input of the pipeline before any node runs and names
each missing dataset, its path and the command that creates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from recflow.hooks import dataset_filepath

#: canonical tables the preprocessing pipeline prepares when the declaration has them
DECLARED_TABLES = {
    "items": "an item catalogue (dataset.events.item, optionally a dataset.items table)",
    "users": "a users table (dataset.users)",
    "interactions": "the event log (dataset.events)",
}


class MissingInputError(FileNotFoundError):
    """A pipeline input file does not exist; the message says how to create it."""


def advice(path: Path) -> str:
    text = path.as_posix()
    if "01_raw/movielens" in text:
        return "fetch MovieLens-100K first: `recflow fetch-movielens` (docs/movielens.md)"
    if "01_raw" in text:
        return ("the embedded raw data is missing: restore data/01_raw/ from git, or "
                "regenerate it with `recflow generate` (docs/data.md)")
    if "05_model_input" in text or "02_intermediate" in text:
        return "run preprocessing first: `kedro run --pipeline=preprocessing` (same --env)"
    if "06_models" in text:
        return "train first: `kedro run --pipeline=ranking` (same --env)"
    return "run the pipeline that writes it first (see `kedro registry describe`)"


class MissingInputsHook:
    @hook_impl
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        missing = []
        for name in sorted(pipeline.inputs()):
            if name == "parameters" or name.startswith("params:"):
                continue
            if name in DECLARED_TABLES:  # made by prepare nodes, absent for this dataset
                missing.append(f"  - dataset '{name}': this pipeline needs "
                               f"{DECLARED_TABLES[name]}, which the dataset declaration "
                               "(parameters_dataset.yml) does not provide")
                continue
            path = dataset_filepath(catalog, name)
            if path is not None and not path.exists():
                missing.append(f"  - dataset '{name}': {path} does not exist; {advice(path)}")
        if missing:
            raise MissingInputError(
                "Cannot start the run, input data is missing:\n" + "\n".join(missing))
