"""The job spec models: what a user may submit.

Each module lists its public names in ``__all__``; this package exports them all, so a new
kind is written in its own module only. ``MODEL_NAMES`` are the names of the spec models
(``sparsetrain`` exports those).
"""

from pydantic import BaseModel

from sparsetrain.spec import aggregation, code, compression, data, job, model, optim, sampler
from sparsetrain.spec.aggregation import *  # noqa: F403
from sparsetrain.spec.code import *  # noqa: F403
from sparsetrain.spec.compression import *  # noqa: F403
from sparsetrain.spec.data import *  # noqa: F403
from sparsetrain.spec.job import *  # noqa: F403
from sparsetrain.spec.model import *  # noqa: F403
from sparsetrain.spec.optim import *  # noqa: F403
from sparsetrain.spec.paths import FileField
from sparsetrain.spec.sampler import *  # noqa: F403

__all__ = ["MODEL_NAMES", "FileField"]
for _module in (aggregation, code, compression, data, job, model, optim, sampler):
    __all__ += _module.__all__
__all__.sort()

MODEL_NAMES: tuple[str, ...] = tuple(
    name
    for name in __all__
    if isinstance(cls := globals().get(name), type) and issubclass(cls, BaseModel)
)
