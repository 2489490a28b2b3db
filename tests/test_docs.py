"""The docs that are generated from code are current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_spec_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "docs/gen_spec_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (ROOT / "docs/spec-reference.md").read_text()
    assert current == module.render(), (
        "run: python docs/gen_spec_reference.py > docs/spec-reference.md"
    )
