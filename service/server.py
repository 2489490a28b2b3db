"""``sparsetrain serve``: run the control plane under uvicorn; ``sparsetrain stop-ray``: stop
the local Ray head a data dir's server started."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from sparsetrain.service import ray_head
from sparsetrain.service.app import create_app
from sparsetrain.service.limits import parser_buffer_bytes
from sparsetrain.service.settings import Settings


def serve(host: str, port: int, settings: Settings | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (the lifespan disconnects from
    Ray and closes the store). Without a Ray address, starts or reuses the data dir's own
    Ray head, which keeps running afterwards. Sets ``RAY_DISABLE_FAILURE_SIGNAL_HANDLER``
    in this process's environment unless it is set."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Ray's driver otherwise installs a crash handler for SIGTERM ahead of uvicorn's.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    settings = settings or Settings()
    app = create_app(settings)
    print(f"sparsetrain API on http://{host}:{port} (docs at /docs)", flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        http="h11",  # bounds the request head it buffers (httptools does not)
        h11_max_incomplete_event_size=parser_buffer_bytes(settings.max_header_bytes),
    )


def stop_ray(data_dir: Path) -> int:
    """Stop the Ray head the server on ``data_dir`` started, and nothing else; prints what
    it did and returns the exit code (0: stopped, or there was none; 1: it failed)."""
    try:
        head, count = ray_head.stop(data_dir)
    except ray_head.HeadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if head is None:
        print(f"no Ray head is recorded for {data_dir}")
    else:
        print(f"stopped the Ray head at {head.address} ({count} processes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparsetrain", description="sparsetrain control plane")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the REST control plane")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    stop_parser = commands.add_parser(
        "stop-ray", help="stop the local Ray head that serve started for a data dir"
    )
    stop_parser.add_argument(
        "--data-dir", type=Path, default=None, help="default $SPARSETRAIN_DATA_DIR"
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port)
    elif args.command == "stop-ray":
        return stop_ray(args.data_dir or Settings().data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
