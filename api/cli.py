"""The ``sparsetrain`` command line. Every command but ``serve`` only calls the SDK."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from sparsetrain import errors
from sparsetrain._progress import ProgressBar
from sparsetrain._summary import summary_lines
from sparsetrain.client import Client
from sparsetrain.jobs import Job, MetricsPage
from sparsetrain.metrics import cumulative_bytes
from sparsetrain.spec import JobSpec
from sparsetrain.spec_files import load_spec
from sparsetrain.status import JobStatus

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a reader that went away (SIGPIPE)
SERVER_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "pydantic_settings", "ray", "torch")


def follow(client: Client, job_id: str) -> Job:
    """Show the job's live progress bar until it ends; returns the final job."""
    job = client.get(job_id)
    bar = ProgressBar(job.name or job_id)
    for event in client.events(job_id):
        if event.event == "metrics":
            page = MetricsPage.model_validate_json(event.data)
            if job.total_steps is None:
                job = client.get(job_id)
            bar.update(page.steps, job.total_steps)
        elif event.event == "status":
            job = client.get(job_id)
        elif event.event == "end":
            break
    job = client.get(job_id)
    bar.close(job.status.value + (f": {job.error}" if job.error else ""), _run_seconds(job))
    return job


def _run_seconds(job: Job) -> float | None:
    """How long the job ran, by the server's clock; None until it has started and ended."""
    if job.started_at is None or job.finished_at is None:
        return None
    return (job.finished_at - job.started_at).total_seconds()


def _cmd_submit(client: Client, args: argparse.Namespace) -> int:
    job = client.submit(load_spec(args.spec), idempotency_key=args.idempotency_key)
    print(job.id)
    if args.follow:
        return 0 if follow(client, job.id).status.value == "SUCCEEDED" else EXIT_FAILED
    return 0


def _cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    page = client.list(status=args.status, limit=args.limit, offset=args.offset)
    print(f"{'id':<18}{'status':<11}{'step':>12}  {'created':<20} name")
    for job in page.items:
        total = job.total_steps if job.total_steps is not None else "?"
        created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
        step = f"{job.step}/{total}"
        print(f"{job.id:<18}{job.status.value:<11}{step:>12}  {created:<20} {job.name or ''}")
    print(f"({len(page.items)} of {page.total})")
    return 0


def _cmd_status(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    print(job.model_dump_json(indent=2) if args.json else "\n".join(summary_lines(job)))
    return 0


def _cmd_follow(client: Client, args: argparse.Namespace) -> int:
    return 0 if follow(client, args.job_id).status.value == "SUCCEEDED" else EXIT_FAILED


def _cmd_logs(client: Client, args: argparse.Namespace) -> int:
    sys.stdout.write(client.logs(args.job_id, "workers" if args.workers else "events"))
    return 0


def _cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    metrics = client.metrics(args.job_id, since=args.since, max_points=args.max_points)
    if args.plot:
        from sparsetrain._plot import plot_jobs

        print(f"plot: {plot_jobs({args.job_id: (list(metrics), metrics.evals)}, args.plot)}")
        return 0
    if metrics.downsampled:
        print(
            f"({len(metrics)} of {metrics.step_records or '?'} step records, evenly spaced; "
            "'sent so far' is exact; --max-points shows more)",
            file=sys.stderr,
        )
    print(f"{'step':>8}{'loss':>12}{'lr':>12}{'bytes':>12}{'sent so far':>14}{'density':>10}")
    for record, total in zip(metrics, cumulative_bytes(metrics), strict=True):
        print(
            f"{record.step:>8}{record.loss:>12.5f}{record.lr:>12.5g}{record.bytes_sent:>12}"
            f"{total:>14}{record.density:>10.4f}"
        )
    for evaluation in metrics.evals:
        print(f"eval @ {evaluation.step}: {evaluation.model_dump_json(exclude_none=True)}")
    return 0


def _cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    print(client.cancel(args.job_id).status.value)
    return 0


def _cmd_scale(client: Client, args: argparse.Namespace) -> int:
    job = client.scale(args.job_id, args.count)
    live = "?" if job.workers is None else job.workers
    print(f"{job.id}: target {job.target_workers} workers ({live} live, {job.status.value})")
    return 0


def _cmd_schema(_: Client | None, args: argparse.Namespace) -> int:
    print(json.dumps(JobSpec.model_json_schema(), indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """Hand ``serve`` or ``stop-ray`` over to the control plane (which needs the ``server``
    extra)."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"error: sparsetrain {args.command} needs {', '.join(missing)}; "
            "install the server: pip install 'sparsetrain[server]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    command = [sys.executable, "-m", "sparsetrain.service", args.command]
    if args.command == "serve":
        command += ["--host", args.host, "--port", str(args.port)]
    elif args.data_dir is not None:
        command += ["--data-dir", args.data_dir]
    os.execv(sys.executable, command)
    return 0  # not reached


def _cmd_demo(args: argparse.Namespace) -> int:
    from sparsetrain._demo import run_demo

    return run_demo(Path(args.data_dir), Path(args.plot), follow)


def _job_status(text: str) -> JobStatus:
    """``--status`` as a ``JobStatus`` (any case); a usage error lists the valid ones."""
    try:
        return JobStatus(text.strip().upper())
    except ValueError:
        known = ", ".join(status.value for status in JobStatus)
        raise argparse.ArgumentTypeError(f"unknown status {text!r}; choose from {known}") from None


def _add_connection_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    """Add ``--url`` and ``--token`` to ``parser`` (mutates it). Sub-commands take them with
    ``default=SUPPRESS`` so a value given before the sub-command is not overwritten."""
    parser.add_argument(
        "--url", default=default, help="server URL (default $SPARSETRAIN_URL or localhost:8000)"
    )
    parser.add_argument("--token", default=default, help="API token (default $SPARSETRAIN_TOKEN)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsetrain", description=__doc__)
    _add_connection_options(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the REST control plane")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    stop_ray = commands.add_parser(
        "stop-ray", help="stop the local Ray head that serve started for a data dir"
    )
    stop_ray.add_argument("--data-dir", default=None, help="default $SPARSETRAIN_DATA_DIR")
    submit = commands.add_parser("submit", help="submit a job spec file (YAML or JSON)")
    submit.add_argument("spec")
    submit.add_argument("--follow", action="store_true", help="show progress until it ends")
    submit.add_argument("--idempotency-key", default=None)
    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", type=_job_status, default=None, help="only jobs in this status")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--offset", type=int, default=0)
    for name, text in (
        ("status", "show one job"),
        ("follow", "live progress until the job ends"),
        ("logs", "the job's events as text"),
        ("cancel", "cancel a job"),
    ):
        commands.add_parser(name, help=text).add_argument("job_id")
    commands.choices["status"].add_argument(
        "--json", action="store_true", help="print the job as JSON (for scripts)"
    )
    commands.choices["logs"].add_argument(
        "--workers",
        action="store_true",
        help="what the job's supervisor and workers wrote (output, tracebacks)",
    )
    scale = commands.add_parser("scale", help="resize a running job (within workers.min..max)")
    scale.add_argument("job_id")
    scale.add_argument("count", type=int)
    metrics = commands.add_parser("metrics", help="a job's metrics, or a plot of them")
    metrics.add_argument("job_id")
    metrics.add_argument("--since", type=int, default=0)
    metrics.add_argument("--max-points", type=int, default=None)
    metrics.add_argument("--plot", default=None, help="write loss and bytes curves to this PNG")
    commands.add_parser("schema", help="print the JobSpec JSON Schema")
    demo = commands.add_parser("demo", help="MEM-SGD vs dense SGD on an embedded service")
    demo.add_argument("--data-dir", default=".sparsetrain/demo")
    demo.add_argument("--plot", default="results/demo.png")
    for name in COMMANDS:
        _add_connection_options(commands.choices[name], argparse.SUPPRESS)
    return parser


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "submit": _cmd_submit,
    "jobs": _cmd_jobs,
    "status": _cmd_status,
    "follow": _cmd_follow,
    "logs": _cmd_logs,
    "metrics": _cmd_metrics,
    "cancel": _cmd_cancel,
    "scale": _cmd_scale,
}


def _validation_lines(error: ValidationError) -> list[str]:
    return [
        f"{'.'.join(str(part) for part in item['loc']) or '(spec)'}: {item['msg']}"
        for item in error.errors()
    ]


def _run(args: argparse.Namespace) -> int:
    if args.command in ("serve", "stop-ray"):
        return _cmd_serve(args)
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "schema":
        return _cmd_schema(None, args)
    with Client(args.url, args.token) as client:
        return COMMANDS[args.command](client, args)


def _silence_stdout() -> None:
    """Point stdout's file descriptor at the null device (mutates fd 1), so the interpreter's
    final flush into a closed pipe does not print an error."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return  # not a real file (captured or replaced): nothing is flushed to a pipe
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failed, 2 bad input, 3 unreachable,
    141 when the reader of stdout went away, like a tool ended by SIGPIPE). Every user error
    is one ``error:`` line on stderr (argparse's usage line for bad arguments), never a
    traceback."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse has already printed
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE if stop.code else 0
    try:
        code = _run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except ValidationError as error:
        for line in _validation_lines(error):
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except errors.ValidationFailed as error:
        for line in error.lines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except errors.TransportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ImportError as error:  # the light install lacks what plots and serves
        if isinstance(error, ModuleNotFoundError) and error.name:
            print(
                f"error: this needs {error.name}; install the server: pip install "
                "'sparsetrain[server]'",
                file=sys.stderr,
            )
        else:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (errors.SparsetrainError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as error:  # a bad argument the SDK refused before sending anything
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
