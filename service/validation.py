"""Checks on a submitted spec that depend on how this server is configured."""

from __future__ import annotations

from pathlib import Path

from sparsetrain.errors import SpecError
from sparsetrain.spec import JobSpec

PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "libsvm": ("path", "test_path"),
    "image_folder": ("path",),
}


def _inside(path: str, roots: list[Path], loc: tuple[str, ...], what: str) -> None:
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise SpecError(loc, f"{what} must lie inside {allowed}")


def _under_storage(path: str, storage: str, loc: tuple[str, ...]) -> None:
    if "://" in storage or "://" in path:
        if not path.startswith(storage.rstrip("/") + "/"):
            raise SpecError(loc, f"must lie inside the storage root {storage}")
        return
    _inside(path, [Path(storage).resolve()], loc, "the path")


def check_spec(
    spec: JobSpec, *, data_roots: list[Path], storage: str, allow_custom_code: bool = False
) -> JobSpec:
    """Refuse user code unless allowed, and paths that escape the data or storage roots.

    Returns the spec with relative data paths made absolute under the first data root, so
    the workers read exactly what was checked. Raises ``SpecError`` naming the field.
    """
    if spec.model.kind == "custom" and not allow_custom_code:
        raise SpecError(
            ("model", "kind"),
            "custom model code is disabled on this server (its operator can enable it with "
            "SPARSETRAIN_ALLOW_CUSTOM_CODE=true)",
        )
    data = spec.data
    if data.kind in PATH_FIELDS:
        updates: dict[str, str] = {}
        for field in PATH_FIELDS[data.kind]:
            value = getattr(data, field)
            if value is None:
                continue
            _inside(value, data_roots, ("data", field), "data files")
            candidate = Path(value)
            absolute = candidate if candidate.is_absolute() else data_roots[0] / candidate
            updates[field] = str(absolute.resolve())
        spec = spec.model_copy(update={"data": data.model_copy(update=updates)})
    if spec.checkpoint.path is not None:
        _under_storage(spec.checkpoint.path, storage, ("checkpoint", "path"))
    if spec.resume_from is not None:
        _under_storage(spec.resume_from, storage, ("resume_from",))
    return spec
