"""Datasets: synthetic, scikit-learn, LIBSVM, image folders, tables (Parquet, CSV, JSON lines)
and text, and their per-worker shards.

Importing the package imports every module in it, so each loader's registration in
``datasets.DATASETS`` runs: a new data kind is its spec and one module here.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
