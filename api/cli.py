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
from sparsetrain.client import Client
from sparsetrain.jobs import Job, MetricsPage
from sparsetrain.spec import JobSpec
from sparsetrain.spec_files import load_spec

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


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
    bar.close(job.status.value + (f": {job.error}" if job.error else ""))
    return job


def _print_job(job: Job) -> None:
    print(f"id          {job.id}")
    print(f"name        {job.name or '-'}")
    print(f"status      {job.status.value}")
    print(f"step        {job.step}/{job.total_steps if job.total_steps is not None else '?'}")
    print(f"created     {job.created_at.isoformat(timespec='seconds')}")
    if job.error:
        print(f"error       {job.error}")
    if job.result:
        print(f"result      {json.dumps(job.result)}")


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
    _print_job(client.get(args.job_id))
    return 0


def _cmd_follow(client: Client, args: argparse.Namespace) -> int:
    return 0 if follow(client, args.job_id).status.value == "SUCCEEDED" else EXIT_FAILED


def _cmd_logs(client: Client, args: argparse.Namespace) -> int:
    sys.stdout.write(client.logs(args.job_id))
    return 0


def _cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    metrics = client.metrics(args.job_id, since=args.since, max_points=args.max_points)
    if args.plot:
        from sparsetrain._plot import plot_jobs

        print(f"plot: {plot_jobs({args.job_id: (list(metrics), metrics.evals)}, args.plot)}")
        return 0
    print(f"{'step':>8}{'loss':>12}{'lr':>12}{'bytes':>12}{'density':>10}")
    for record in metrics:
        print(
            f"{record.step:>8}{record.loss:>12.5f}{record.lr:>12.5g}{record.bytes_sent:>12}"
            f"{record.density:>10.4f}"
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
    """Hand over to the control plane (which needs the ``server`` extra)."""
    if importlib.util.find_spec("sparsetrain.service") is None:
        print("sparsetrain serve needs the server: pip install 'sparsetrain[server]'")
        return EXIT_USAGE
    command = [sys.executable, "-m", "sparsetrain.service", "serve"]
    os.execv(sys.executable, [*command, "--host", args.host, "--port", str(args.port)])
    return 0  # not reached


def _cmd_demo(args: argparse.Namespace) -> int:
    from sparsetrain._demo import run_demo

    return run_demo(Path(args.data_dir), Path(args.plot), follow)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsetrain", description=__doc__)
    parser.add_argument("--url", help="server URL (default $SPARSETRAIN_URL or localhost:8000)")
    parser.add_argument("--token", help="API token (default $SPARSETRAIN_TOKEN)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the REST control plane")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    submit = commands.add_parser("submit", help="submit a job spec file (YAML or JSON)")
    submit.add_argument("spec")
    submit.add_argument("--follow", action="store_true", help="show progress until it ends")
    submit.add_argument("--idempotency-key", default=None)
    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", default=None)
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--offset", type=int, default=0)
    for name, text in (
        ("status", "show one job"),
        ("follow", "live progress until the job ends"),
        ("logs", "the job's events as text"),
        ("cancel", "cancel a job"),
    ):
        commands.add_parser(name, help=text).add_argument("job_id")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failed, 2 bad input, 3 unreachable)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "schema":
            return _cmd_schema(None, args)
        with Client(args.url, args.token) as client:
            return COMMANDS[args.command](client, args)
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
    except (errors.SparsetrainError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
