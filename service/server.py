"""``sparsetrain serve``: run the control plane under uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from sparsetrain.service.app import create_app
from sparsetrain.service.settings import Settings


def serve(host: str, port: int, settings: Settings | None = None) -> None:
    """Serve until interrupted. Without a Ray address, starts or reuses a local Ray head."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app = create_app(settings or Settings())
    print(f"sparsetrain API on http://{host}:{port} (docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparsetrain", description="sparsetrain control plane")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the REST control plane")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
