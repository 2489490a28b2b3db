"""What runs on the workers: compression, memory, models, data and the training step.

Needs the ``server`` extra (torch). ``simulate`` runs a job's W workers in one process.
"""

from sparsetrain.workers.result import TrainResult
from sparsetrain.workers.simulator import simulate, simulate_async

__all__ = ["TrainResult", "simulate", "simulate_async"]
