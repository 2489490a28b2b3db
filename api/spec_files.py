"""Job spec files: ``load_spec(path)`` reads a ``.yaml``, ``.yml`` or ``.json`` file.

PyYAML is imported only when a YAML file is read, so the SDK stays importable without it.
A duplicated key is refused (the later value would otherwise silently win), and unknown
keys are refused by ``JobSpec`` itself, which names them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sparsetrain.errors import SpecFileError
from sparsetrain.spec import JobSpec

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
# A float in exponent form without a dot (``1e-3``, ``5E+2``): plain YAML 1.1 reads it as a string.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
_KINDS = {
    type(None): "nothing",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def load_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate the job spec in ``path``.

    Raises ``SpecFileError`` (with the file and, where known, the line) when the file is
    missing, unreadable, not valid YAML/JSON, repeats a key, or does not hold a mapping at the
    top level; ``pydantic.ValidationError`` when the mapping is not a valid ``JobSpec`` (its
    errors name each field path, e.g. an unknown key); ``ImportError`` when the file is YAML
    and PyYAML is not installed.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in SPEC_SUFFIXES:
        raise SpecFileError(str(file), f"expected a {', '.join(SPEC_SUFFIXES)} file")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecFileError(str(file), "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecFileError(str(file), f"cannot read the file: {error}") from None
    data, line = _parse_json(file, text) if suffix == ".json" else _parse_yaml(file, text)
    if not isinstance(data, dict):
        kind = _KINDS.get(type(data), type(data).__name__)
        raise SpecFileError(
            str(file), f"the top level must be a mapping of spec fields, got {kind}", line
        )
    return JobSpec.model_validate(data)


def _parse_json(file: Path, text: str) -> tuple[Any, int]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise SpecFileError(str(file), f"duplicate key {key!r}")
            found[key] = value
        return found

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as error:
        raise SpecFileError(str(file), error.msg, error.lineno) from None
    start = len(text) - len(text.lstrip())
    return data, text.count("\n", 0, start) + 1


def _parse_yaml(file: Path, text: str) -> tuple[Any, int]:
    """The document and the line it starts on. Only plain YAML is accepted (safe loader)."""
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            f"reading the YAML spec {file} needs PyYAML: pip install pyyaml "
            "(or write the spec as JSON)"
        ) from error

    class Loader(yaml.SafeLoader):
        """Safe YAML whose numbers are read as YAML 1.2 reads them: ``1e-3`` is a float
        (YAML 1.1 makes it a string, which the spec, taking no string for a number, refuses)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise SpecFileError(str(file), f"duplicate key {key!r}", line)
                seen.add(key)
            return dict(super().construct_mapping(node, deep=deep))

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = " ".join(part for part in (error.context, error.problem) if part)
        line = mark.line + 1 if mark is not None else None
        raise SpecFileError(str(file), message or "malformed YAML", line) from None
    except yaml.YAMLError as error:
        raise SpecFileError(str(file), f"malformed YAML: {error}") from None
    finally:
        loader.dispose()
    return data, (node.start_mark.line + 1 if node is not None else 1)
