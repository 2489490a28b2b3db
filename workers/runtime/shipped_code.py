"""The Ray runtime environment that ships a job's own code (``JobSpec.code``) to its actors.

The wheel or package folder is uploaded to the cluster (Ray's GCS, as ``ray.init`` does for
a job-level ``py_modules``, since an actor's own runtime environment takes only URIs) and
the supervisor is created with ``{"py_modules": [its URI]}``; the worker actors it creates
inherit it (Ray's runtime environments pass from an actor to the actors it starts). Each
node installs the wheel, or unpacks the folder, the first time one of the job's actors
starts there, so none needs it installed beforehand.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from sparsetrain.errors import SpecError
from sparsetrain.spec import JobSpec

_FIELD = ("code", "path")


def code_module(spec: JobSpec) -> str | None:
    """The absolute path of ``spec.code`` (None without it), checked: a readable ``.whl``
    file with a wheel's name, or a folder holding an ``__init__.py`` (a package).

    Raises ``SpecError`` (``code.path``) naming what is wrong; the message names no
    server path. Reads only file metadata.
    """
    if spec.code is None:
        return None
    path = spec.code.path.rstrip("/") or spec.code.path
    if path.endswith(".whl"):
        if not os.path.isfile(path):
            raise SpecError(_FIELD, "the wheel does not exist (or is not a file)")
        if not os.access(path, os.R_OK):
            raise SpecError(_FIELD, "the wheel cannot be read")
        name = os.path.basename(path)
        if len(name.removesuffix(".whl").split("-")) not in (5, 6):
            message = f"{name!r} is not a wheel's name (name-version-python-abi-platform.whl)"
            raise SpecError(_FIELD, message)
    elif not os.path.isdir(path):
        raise SpecError(_FIELD, "the package folder does not exist (or is not a folder)")
    elif not os.path.isfile(os.path.join(path, "__init__.py")):
        raise SpecError(_FIELD, "the folder is not a package: it has no __init__.py")
    return os.path.abspath(path)


def code_runtime_env(spec: JobSpec) -> dict[str, Any] | None:
    """The runtime environment that ships ``spec.code`` (None without it): checks it
    (``code_module``), uploads it to the connected Ray cluster unless a copy with the same
    content is there already, and returns ``{"py_modules": [its URI]}``.

    Needs a Ray connection. Raises ``SpecError`` (``code.path``) when the code is wrong or
    cannot be uploaded.
    """
    path = code_module(spec)
    if path is None:
        return None
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed

    with tempfile.TemporaryDirectory(prefix="sparsetrain-code-") as scratch:
        try:
            env = upload_py_modules_if_needed(
                {"py_modules": [path]}, include_gitignore=False, scratch_dir=scratch
            )
        except (OSError, ValueError, RuntimeError) as error:
            message = f"could not be uploaded to the cluster ({type(error).__name__})"
            raise SpecError(_FIELD, message) from None
    return {"py_modules": list(env["py_modules"])}
