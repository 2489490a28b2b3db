"""The import rule that keeps the architecture visible (see ``docs/architecture.md``).

``api/`` (the ``sparsetrain`` package) imports neither torch, ray, the service nor the
workers, so the SDK installs light; ``service`` reaches ``workers`` only via its launcher.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_API = (
    "torch",
    "ray",
    "numpy",
    "fastapi",
    "sqlalchemy",
    "sparsetrain.service",
    "sparsetrain.workers",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_api_imports_nothing_heavy_statically() -> None:
    assert _violations("api", FORBIDDEN_IN_API) == []


def test_importing_the_sdk_loads_no_heavy_module() -> None:
    code = (
        "import sys, sparsetrain, sparsetrain.spec, sparsetrain.metrics, sparsetrain.errors\n"
        "import sparsetrain.jobs, sparsetrain.status\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_API[:5]!r}"
        " or m.startswith(('sparsetrain.service', 'sparsetrain.workers'))]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_workers_do_not_import_the_service() -> None:
    assert _violations("workers", ("sparsetrain.service", "fastapi", "sqlalchemy")) == []


def test_service_reaches_the_workers_only_through_its_launcher() -> None:
    found = [
        v
        for v in _violations("service", ("sparsetrain.workers", "torch"))
        if not v.startswith("service/launcher.py ")
    ]
    assert found == []


def test_the_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch.nn\nfrom sparsetrain.workers import simulate\n")
    assert _imports(bad) == {"torch.nn", "sparsetrain.workers"}
