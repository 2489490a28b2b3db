"""Checks on a submitted spec that depend on how this server is configured."""

from __future__ import annotations

from sparsetrain.errors import SpecError
from sparsetrain.service.storage import StorageLayout
from sparsetrain.spec import JobSpec
from sparsetrain.spec.aggregation import runtime_problem


def check_spec(
    spec: JobSpec, *, principal: str, layout: StorageLayout, allow_custom_code: bool = False
) -> JobSpec:
    """Refuse user code (``custom`` models and data, ``code``) unless allowed, a TensorBoard
    export to storage that is a URL, an ``exchange.aggregation`` its transport does not run
    on the Ray runtime (``runtime_problem``), and paths that leave ``principal``'s roots:
    data files (and shipped code) outside the data roots, a ``checkpoint.path`` outside the
    job's own folder, a ``resume_from`` outside the principal's storage namespace, chained
    URLs the operator did not allow (see ``StorageLayout``).

    Returns the spec to store: its paths as the user gave them (the launcher makes them
    absolute). Raises ``SpecError`` naming the field; its message names no server path.
    """
    user_code = _user_code(spec)
    if user_code and not allow_custom_code:
        field, what = user_code[0]
        raise SpecError(
            field,
            f"{what} is disabled on this server (its operator can enable it with "
            "SPARSETRAIN_ALLOW_CUSTOM_CODE=true)",
        )
    if spec.export.tensorboard and "://" in layout.storage:
        raise SpecError(
            ("export", "tensorboard"),
            "this server's storage is a URL; TensorBoard files need a local or shared folder",
        )
    problem = runtime_problem(spec)
    if problem is not None:
        raise SpecError(("exchange", "aggregation"), problem)
    layout.check(spec, principal)
    return spec


def _user_code(spec: JobSpec) -> list[tuple[tuple[str, ...], str]]:
    """Each part of ``spec`` that imports or ships user code: its field and what it is."""
    found: list[tuple[tuple[str, ...], str]] = []
    if spec.model.kind == "custom":
        found.append((("model", "kind"), "custom model code"))
    if spec.data.kind == "custom":
        found.append((("data", "kind"), "custom data code"))
    if spec.code is not None:
        found.append((("code",), "code shipped with a job"))
    return found
