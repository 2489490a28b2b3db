"""The control plane (FastAPI + job store). Needs the ``server`` extra."""
