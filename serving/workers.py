"""``python -m serving.workers --host H --port P --workers N``: the gateway as uvicorn worker processes, with the
server options of :func:`serving.connections.uvicorn_options` (uvicorn's own command line cannot take a protocol
class). Settings come from ``NASOPS_GATEWAY_*`` as for ``serving.app:create_app_from_env``."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from serving.connections import raise_file_limit, uvicorn_options

    parser = argparse.ArgumentParser(prog="python -m serving.workers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=10)
    args = parser.parse_args(argv)
    raise_file_limit()
    uvicorn.run("serving.app:create_app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level,
                timeout_graceful_shutdown=args.timeout_graceful_shutdown, **uvicorn_options())


if __name__ == "__main__":
    main()
