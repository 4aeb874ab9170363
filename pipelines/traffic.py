"""The traffic process: production clients played from the ``prod`` split, in a process of their own.

The embedded canary (``make demo``, a refresh without ``--gateway``) and the end-to-end tests run it beside the
gateway so that the controller sees what it would see in production: requests from another process over many
connections (so every gateway worker serves some), and true labels that arrive ``--label-delay-s`` later through
``/feedback``, as from a labelling system. It runs until ``--duration-s`` is over or it is stopped (SIGTERM).

    python -m pipelines.traffic --gateway URL --data PREPARED.npz --rate 50 --label-delay-s 5 \\
        --feedback-token-file FILE [--drift noise=0.3] [--duration-s 600]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from pipelines.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", required=True, help="gateway base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--data", required=True, help="prepared data (.npz from prepare_data) with a prod split")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--duration-s", type=float, default=3600.0, help="seconds to run (default: an hour)")
    parser.add_argument("--label-delay-s", type=float, default=1.0, help="seconds from an answer to its label")
    parser.add_argument("--feedback-token-file", help="file holding the gateway's feedback token (no labels if "
                        "absent)")
    parser.add_argument("--drift", help="drift applied to the inputs, e.g. noise=0.3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary", help="write the replay summary (JSON) here at the end")
    parser.add_argument("--ready-file", help="created once the first request is answered (traffic flows)")
    return parser


def _ready_marker(path: str | None):
    """A progress callback that creates ``path`` after the first request (None: no callback)."""
    if not path:
        return None
    marker = Path(path)

    def progress(done: int, total: int) -> None:
        if done == 1:
            marker.touch()
    return progress


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM stops sending; requests in flight finish, and the summary (what was sent and answered) is written.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        from monitoring.core.tasks import get_task
        from pipelines.prepared import load_prepared
        from pipelines.replay import replay

        data = load_prepared(args.data)
        token = Path(args.feedback_token_file).read_text().strip() if args.feedback_token_file else None
        # numeric labels (a regression's) are the target values themselves, not indices into classes
        numeric = get_task(data.task).numeric_labels
        classes = None if numeric else list(data.meta.get("classes") or range(data.num_classes))
        summary = replay(args.gateway, data.x_prod, data.y_prod, rate=args.rate, duration=args.duration_s,
                         drift=args.drift, feedback=token is not None, seed=args.seed, classes=classes,
                         feedback_token=token, label_delay_s=args.label_delay_s, fresh_connections=True,
                         stop=stop, progress=_ready_marker(args.ready_file))
    except (UserError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary.to_dict()))
    print(json.dumps({"sent": summary.sent, "ok": summary.ok, "feedback_sent": summary.feedback_sent,
                      "feedback_errors": summary.feedback_errors, "pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
