"""The command line, through ``main(argv)``, against a live server (fake launcher)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparsetrain.cli import EXIT_UNREACHABLE, EXIT_USAGE, main
from sparsetrain.client import Client
from tests.api.conftest import LiveServer, unused_port

SPEC_YAML = """\
name: cli-job
model: {kind: logistic_regression}
data: {kind: synthetic, n: 200, d: 20}
steps: 8
"""


def _spec_file(tmp_path: Path, text: str = SPEC_YAML) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def _run(live: LiveServer, *argv: str) -> int:
    return main(["--url", live.url, *argv])


def test_submit_jobs_status_logs_metrics_cancel(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(live, "submit", str(_spec_file(tmp_path))) == 0
    job_id = capsys.readouterr().out.strip()
    assert len(job_id) == 16
    live.tick(3)
    assert _run(live, "jobs") == 0
    listing = capsys.readouterr().out
    assert job_id in listing and "SUCCEEDED" in listing and "cli-job" in listing
    assert _run(live, "status", job_id) == 0
    assert "status      SUCCEEDED" in capsys.readouterr().out
    assert _run(live, "logs", job_id) == 0
    assert "[RUNNING] training started" in capsys.readouterr().out
    assert _run(live, "metrics", job_id) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["step", "loss", "lr", "bytes", "density"]
    assert len([line for line in table if line.strip()[:1].isdigit()]) == 8
    plot = tmp_path / "curves.png"
    assert _run(live, "metrics", job_id, "--plot", str(plot)) == 0
    assert plot.stat().st_size > 5_000
    assert _run(live, "cancel", job_id) == 1  # already ended: a 409, reported in one line
    assert "409 Conflict" in capsys.readouterr().err


def test_scale_prints_the_new_target_and_refuses_bad_sizes(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = SPEC_YAML.replace("steps: 8", "steps: 1000\nworkers: {count: 2, min: 1, max: 4}")
    assert _run(live, "submit", str(_spec_file(tmp_path, spec))) == 0
    job_id = capsys.readouterr().out.strip()
    live.tick(2)
    assert _run(live, "scale", job_id, "3") == 0
    assert f"{job_id}: target 3 workers" in capsys.readouterr().out
    assert _run(live, "scale", job_id, "9") == 2
    assert "outside the job's [min, max] = [1, 4]" in capsys.readouterr().err


def test_follow_prints_progress_and_exit_code(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(live.url) as client:
        ok = client.submit(_spec_file(tmp_path)).id
        bad = client.submit(_spec_file(tmp_path)).id
    live.tick(2)
    live.app.state.sparsetrain.launcher.fail(bad, "non-finite loss or gradient (step 5, rank 0)")
    live.tick(3)
    assert _run(live, "follow", ok) == 0
    err = capsys.readouterr().err
    assert "8/8" in err and "SUCCEEDED" in err and "loss" in err
    assert _run(live, "follow", bad) == 1
    assert "FAILED: non-finite loss or gradient (step 5, rank 0)" in capsys.readouterr().err


def test_bad_spec_files_are_one_line_per_problem(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = _spec_file(tmp_path, SPEC_YAML + "learning_rate: 0.1\n")
    assert _run(live, "submit", str(typo)) == EXIT_USAGE
    assert "error: learning_rate: Extra inputs are not permitted" in capsys.readouterr().err
    bad_ratio = _spec_file(tmp_path, SPEC_YAML + "compression: {kind: topk, ratio: 3}\n")
    assert _run(live, "submit", str(bad_ratio)) == EXIT_USAGE
    assert "error: compression.topk.ratio:" in capsys.readouterr().err
    broken = _spec_file(tmp_path, "model: [unclosed\n")
    assert _run(live, "submit", str(broken)) == 1
    assert "job.yaml:" in capsys.readouterr().err


def test_server_side_validation_errors_name_the_field(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = _spec_file(
        tmp_path, SPEC_YAML.replace("{kind: synthetic, n: 200, d: 20}", "{kind: libsvm, path: /x}")
    )
    assert _run(live, "submit", str(outside)) == EXIT_USAGE
    assert "error: data.path: data files must lie inside" in capsys.readouterr().err


def test_unreachable_server_says_where_and_how(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    assert main(["--url", url, "jobs"]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert url in err and "sparsetrain serve" in err


def test_schema_prints_the_job_spec_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "JobSpec" and "compression" in schema["properties"]


def test_examples_are_valid_specs() -> None:
    from sparsetrain._demo import DEMO_SPECS
    from sparsetrain.spec_files import load_spec

    examples = Path(__file__).resolve().parents[2] / "examples"
    specs = {path.stem: load_spec(path) for path in sorted(examples.glob("*.yaml"))}
    assert len(specs) >= 7
    assert specs["memsgd_topk"] == DEMO_SPECS["memsgd-topk"]
    assert specs["sgd_dense"] == DEMO_SPECS["sgd-dense"]
