"""The command line, through ``main(argv)``, against a live server (fake launcher)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sparsetrain._progress import ProgressBar
from sparsetrain.cli import EXIT_BROKEN_PIPE, EXIT_UNREACHABLE, EXIT_USAGE, main
from sparsetrain.client import Client
from sparsetrain.metrics import StepMetrics
from sparsetrain.service.settings import Settings
from sparsetrain.service.store_schema import job_table
from tests.api.conftest import LiveServer, serve_live, unused_port
from tests.run_python import run_python

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


def _fail(live: LiveServer, job_id: str, message: str, ticks: int) -> None:
    """Make the fake launcher fail ``job_id`` with ``message``, then run ``ticks`` monitor
    passes so the server records it (and moves the other jobs on)."""
    live.app.state.sparsetrain.launcher.fail(job_id, message)
    live.tick(ticks)


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
    assert _run(live, "logs", job_id, "--workers") == 0
    assert capsys.readouterr().out == "==> worker-0.log <==\nhello from rank 0\n"
    assert _run(live, "metrics", job_id) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["step", "loss", "lr", "bytes", "sent", "so", "far", "density"]
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
    _fail(live, bad, "non-finite loss or gradient (step 5, rank 0)", ticks=3)
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


def _finished_job(live: LiveServer, tmp_path: Path) -> str:
    """A job of 8 steps, run to SUCCEEDED on the fake launcher; returns its id."""
    with Client(live.url) as client:
        job_id = client.submit(_spec_file(tmp_path)).id
    live.tick(3)
    with Client(live.url) as client:
        assert client.get(job_id).status.value == "SUCCEEDED"
    return job_id


def test_unknown_status_filter_is_a_usage_error_listing_the_statuses(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(live, "jobs", "--status", "FOO") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unknown status 'FOO'; choose from PENDING, STARTING, RUNNING" in err
    assert "Traceback" not in err
    job_id = _finished_job(live, tmp_path)
    assert _run(live, "jobs", "--status", "succeeded") == 0  # any case
    assert job_id in capsys.readouterr().out


def test_url_and_token_work_before_and_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "tokens", api_tokens="alice:s3cret")
    with serve_live(settings) as server:
        assert main(["jobs", "--url", server.url, "--token", "s3cret"]) == 0
        assert "(0 of 0)" in capsys.readouterr().out
        assert main(["--url", server.url, "--token", "s3cret", "jobs"]) == 0
        assert "(0 of 0)" in capsys.readouterr().out
        nowhere = f"http://127.0.0.1:{unused_port()}"
        assert main(["--url", nowhere, "jobs", "--url", server.url, "--token", "s3cret"]) == 0
        capsys.readouterr()
        assert main(["--url", server.url, "jobs"]) == 1  # no token: refused, in one line
        assert "401" in capsys.readouterr().err


def test_status_is_a_readable_summary_and_json_on_request(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _finished_job(live, tmp_path)
    assert _run(live, "status", job_id) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        f"id          {job_id}",
        "name        cli-job",
        "status      SUCCEEDED",
        "step        8/8",
    ]
    assert "final       train loss 0.5, train accuracy 0.9 (step 8)" in lines
    assert "sent        1.6 KB (1,600 bytes)" in lines
    assert "  rank 1    training, node 10.0.0.7, pid 1001, last step 7" in lines
    assert not any("{" in line for line in lines)
    assert _run(live, "status", job_id, "--json") == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["id"] == job_id and dumped["result"]["final"]["train_accuracy"] == 0.9


def test_status_of_a_failed_job_names_the_error(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(live.url) as client:
        job_id = client.submit(_spec_file(tmp_path)).id
    live.tick(1)
    _fail(live, job_id, "worker 1 lost at step 4", ticks=1)
    assert _run(live, "status", job_id) == 0
    out = capsys.readouterr().out
    assert "status      FAILED" in out and "error       worker 1 lost at step 4" in out
    assert "final " not in out


def test_follow_on_a_finished_job_shows_the_speed_it_ran_at(
    live: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _finished_job(live, tmp_path)
    engine = sa.create_engine(live.app.state.sparsetrain.settings.resolved_database_url())
    try:  # the job took 40 s by the server's clock: 8 steps / 40 s
        with engine.begin() as conn:
            finished = conn.execute(
                sa.select(job_table.c.finished_at).where(job_table.c.id == job_id)
            ).scalar_one()
            conn.execute(
                job_table.update()
                .where(job_table.c.id == job_id)
                .values(started_at=finished - timedelta(seconds=40))
            )
    finally:
        engine.dispose()
    assert _run(live, "follow", job_id) == 0
    err = capsys.readouterr().err
    assert "8/8" in err and "5.0 s/step" in err and "steps/s" not in err


def test_progress_bar_shows_no_speed_for_a_replayed_backlog() -> None:
    stream = io.StringIO()
    bar = ProgressBar("replay", stream)
    bar.update([_step(step) for step in range(600)], 600)
    bar.close("SUCCEEDED")
    line = stream.getvalue()
    assert "600/600" in line and "SUCCEEDED" in line
    assert "steps/s" not in line and "s/step" not in line


def _step(step: int) -> StepMetrics:
    return StepMetrics(
        step=step,
        loss=1.0,
        lr=0.1,
        bytes_sent=10,
        bytes_per_worker=[10],
        density=0.5,
        compute_s=0.0,
        compress_s=0.0,
        exchange_s=0.0,
    )


def test_metrics_into_a_closed_pipe_exits_quietly(live: LiveServer, tmp_path: Path) -> None:
    """``sparsetrain metrics JOB | head -n 1``: far more output than a pipe holds."""
    spec = SPEC_YAML.replace("steps: 8", "steps: 6000")
    with Client(live.url) as client:
        job_id = client.submit(_spec_file(tmp_path, spec)).id
    live.app.state.sparsetrain.launcher.steps_per_poll = 6000
    live.tick(2)
    command = [sys.executable, "-m", "sparsetrain", "--url", live.url, "metrics", job_id]
    command += ["--max-points", "6000"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline().split()[0] == b"step"  # the table's header
        child.stdout.close()  # what head does after its first line
        err = child.stderr.read().decode()
        code = child.wait(timeout=60)
    assert err == ""
    assert code == EXIT_BROKEN_PIPE


def _python_path(first: Path) -> str:
    """``$PYTHONPATH`` with ``first`` (where a test's ``sitecustomize`` lies) in front."""
    return os.pathsep.join(filter(None, [str(first), os.environ.get("PYTHONPATH")]))


def test_serve_without_the_server_extra_says_how_to_install_it(tmp_path: Path) -> None:
    """The light install, imitated: a ``sitecustomize`` makes ``import uvicorn`` fail in every
    interpreter started here, so a server handed over to could not start either."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['uvicorn'] = None\n")
    env = {
        **os.environ,
        "PYTHONPATH": _python_path(tmp_path),
        "SPARSETRAIN_DATA_DIR": str(tmp_path),
    }
    done = run_python(
        "-m", "sparsetrain", "serve", "--port", str(unused_port()), env=env, cwd=tmp_path
    )
    assert done.returncode == EXIT_USAGE
    assert "install the server: pip install 'sparsetrain[server]'" in done.stderr
    assert "uvicorn" in done.stderr and "Traceback" not in done.stderr


def test_plot_without_matplotlib_says_how_to_install_it(live: LiveServer, tmp_path: Path) -> None:
    job_id = _finished_job(live, tmp_path)
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    env = {**os.environ, "PYTHONPATH": _python_path(tmp_path)}
    command = ["-m", "sparsetrain", "--url", live.url, "metrics", job_id]
    done = run_python(*command, "--plot", str(tmp_path / "curves.png"), env=env)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "error: plotting needs matplotlib: pip install matplotlib" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "curves.png").exists()
