"""``load_spec``: YAML and JSON spec files, and errors that point at the problem."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sparsetrain import JobSpec, SpecFileError, load_spec
from tests.specs import job_spec

SPEC = JobSpec.model_validate(
    job_spec(name="demo", compression={"kind": "randk", "k": 3}, workers={"count": 4})
)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"job{suffix}"
    data = SPEC.model_dump(mode="json")
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    assert load_spec(path) == SPEC
    assert load_spec(str(path)) == SPEC


def test_a_short_yaml_spec_gets_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("model: {kind: logistic_regression}\ndata: {kind: synthetic}\nsteps: 5\n")
    spec = load_spec(path)
    assert spec.steps == 5 and spec.compression.kind == "topk"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_spec(compression={"kind": "topk", "ratioo": 0.1})))
    with pytest.raises(ValidationError) as caught:
        load_spec(path)
    assert [e["loc"] for e in caught.value.errors()] == [("compression", "topk", "ratioo")]
    assert "ratioo" in str(caught.value)


def test_malformed_yaml_gives_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("model:\n  kind: logistic_regression\ndata: [synthetic\nsteps: 5\n")
    with pytest.raises(SpecFileError) as caught:
        load_spec(path)
    error = caught.value
    assert error.path == str(path) and error.line == 4
    assert str(error).startswith(f"{path}:4: ")


def test_malformed_json_gives_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('{\n  "steps": 5,\n  "model": }\n')
    with pytest.raises(SpecFileError) as caught:
        load_spec(path)
    assert caught.value.line == 3


@pytest.mark.parametrize(
    ("name", "text", "line", "message"),
    [
        ("list.yaml", "\n- model\n- data\n", 2, "got a list"),
        ("empty.yaml", "# nothing\n", 1, "got nothing"),
        ("scalar.json", "\n\n42", 3, "got a number"),
        ("dupe.yaml", "steps: 5\nmodel: {kind: mlp}\nsteps: 6\n", 3, "duplicate key 'steps'"),
    ],
)
def test_not_a_mapping_or_repeated_key(
    tmp_path: Path, name: str, text: str, line: int, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecFileError, match=message) as caught:
        load_spec(path)
    assert caught.value.line == line


def test_duplicate_json_key(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('{"steps": 5, "steps": 6}')
    with pytest.raises(SpecFileError, match="duplicate key 'steps'"):
        load_spec(path)


def test_missing_file_unknown_suffix_and_unsafe_tags(tmp_path: Path) -> None:
    with pytest.raises(SpecFileError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")
    toml = tmp_path / "job.toml"
    toml.write_text("steps = 5\n")
    with pytest.raises(SpecFileError, match=r"expected a \.yaml, \.yml, \.json file"):
        load_spec(toml)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("steps: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecFileError) as caught:
        load_spec(unsafe)
    assert caught.value.line == 1


def test_yaml_without_pyyaml_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("steps: 5\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ImportError, match="pip install pyyaml"):
        load_spec(path)
