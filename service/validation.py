"""Checks on a submitted spec that depend on how this server is configured."""

from __future__ import annotations

from sparsetrain.errors import SpecError
from sparsetrain.service.storage import StorageLayout
from sparsetrain.spec import JobSpec


def check_spec(
    spec: JobSpec, *, principal: str, layout: StorageLayout, allow_custom_code: bool = False
) -> JobSpec:
    """Refuse user code unless allowed, a TensorBoard export to storage that is a URL, and
    paths that leave ``principal``'s roots: data files outside the data roots, a
    ``checkpoint.path`` outside the job's own folder, a ``resume_from`` outside the
    principal's storage namespace, chained URLs the operator did not allow (see
    ``StorageLayout``).

    Returns the spec to store: its paths as the user gave them (the launcher makes them
    absolute). Raises ``SpecError`` naming the field; its message names no server path.
    """
    if spec.model.kind == "custom" and not allow_custom_code:
        raise SpecError(
            ("model", "kind"),
            "custom model code is disabled on this server (its operator can enable it with "
            "SPARSETRAIN_ALLOW_CUSTOM_CODE=true)",
        )
    if spec.export.tensorboard and "://" in layout.storage:
        raise SpecError(
            ("export", "tensorboard"),
            "this server's storage is a URL; TensorBoard files need a local or shared folder",
        )
    layout.check(spec, principal)
    return spec
