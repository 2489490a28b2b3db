"""The import rule that keeps the architecture visible (see ``docs/architecture.md``).

``api/`` (the ``sparsetrain`` package) imports neither torch, ray, the service nor the
workers, so the SDK installs light; ``service`` reaches ``workers`` only via its launcher.
Inside ``workers/`` only ``runtime/`` imports Ray; the training core, models, data and
compression stay Ray-free so the simulator runs without a cluster.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.run_python import run_python

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


def _loaded_after(code: str) -> str:
    """What ``code``, run in a fresh interpreter, prints (stripped); fails the test with the
    child's stderr when it exits non-zero."""
    done = run_python("-c", code)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


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
    assert _loaded_after(code) == ""


RAY_FREE_WORKERS = ("workers/training", "workers/models", "workers/data", "workers/compression")
WORKER_PACKAGES = ("runtime", "training", "models", "data", "compression")


def test_workers_do_not_import_the_service() -> None:
    assert _violations("workers", ("sparsetrain.service", "fastapi", "sqlalchemy")) == []


def test_only_the_worker_runtime_imports_ray() -> None:
    found = [v for folder in RAY_FREE_WORKERS for v in _violations(folder, ("ray",))]
    assert found == []


def test_the_ray_free_worker_packages_never_import_the_runtime() -> None:
    forbidden = ("sparsetrain.workers.runtime",)
    found = [v for folder in RAY_FREE_WORKERS for v in _violations(folder, forbidden)]
    assert found == []


def test_every_worker_module_lives_in_a_role_package() -> None:
    """``workers/`` holds only its ``__init__.py`` and the role packages, each a package."""
    loose = sorted(p.name for p in (ROOT / "workers").glob("*.py") if p.name != "__init__.py")
    assert loose == []
    folders = sorted(
        p.name for p in (ROOT / "workers").iterdir() if p.is_dir() and p.name != "__pycache__"
    )
    assert folders == sorted(WORKER_PACKAGES)
    assert all((ROOT / "workers" / name / "__init__.py").is_file() for name in folders)


def test_importing_the_ray_free_workers_loads_no_ray() -> None:
    modules = sorted(
        ".".join(("sparsetrain", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for folder in RAY_FREE_WORKERS
        for path in (ROOT / folder).rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))\n"
    )
    assert _loaded_after(code) == ""


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
