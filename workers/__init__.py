"""What runs on the workers, by role: ``runtime`` (the Ray actors and loops, the only part
that imports Ray), ``training`` (the step, memory, simulator, checkpoints), ``models``,
``data`` and ``compression``.

Needs the ``server`` extra (torch). ``simulate`` runs a job's W workers in one process.
"""

from sparsetrain.workers.training.result import TrainResult
from sparsetrain.workers.training.simulator import simulate, simulate_async

__all__ = ["TrainResult", "simulate", "simulate_async"]
