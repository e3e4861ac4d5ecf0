"""recflow: declarative recommender-systems pipelines on Kedro."""

import warnings

__version__ = "0.1.0"

# pandera imports pyspark.pandas whenever PySpark is installed (the `spark` / `dev` extras),
# and PySpark warns about pandas 3 on import: ten lines on every run, Spark or not. The
# Spark pipeline's own checks (docs/scale.md) are what tell whether Spark works here.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                        category=FutureWarning)
# Kedro's own config loader calls OmegaConf.register_new_resolver, which the current
# OmegaConf deprecates: 28 lines of a warning about Kedro's code on every run.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated",
                        category=UserWarning)
# The report nodes gather every model entry's namespaced outputs (`ranking.din.metrics`, ...): a
# node outside those namespaces reading them is the fan-in Kedro's namespaces are built
# for, yet Kedro warns once per run that "dataset names contain '.'".
warnings.filterwarnings("ignore", message=r"One or more dataset names contain '\.'",
                        category=UserWarning)
