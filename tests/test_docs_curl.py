"""The ``curl`` examples of docs/serving.md ("Try it") run as written against a live gateway in its own process.

The first block sets ``GATEWAY`` and ``FEEDBACK_TOKEN``; the test replaces only the address and the token file
in it, and runs every later block after it with real ``bash`` and ``curl`` (``--fail-with-body``: an HTTP error
fails the block). A doc edit that breaks an example fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts a gateway process on the session's registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
TOKEN = "docs-curl-feedback-token-0123456789-abcdefghij"


def try_it_blocks(text: str) -> list[str]:
    """The fenced ``bash`` blocks of the "## Try it" section, in order."""
    section = text.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def test_the_try_it_examples_run_verbatim(shared_registry, tmp_path):
    curl = shutil.which("curl")
    assert curl, "curl is not installed"
    setup, *blocks = try_it_blocks(DOC.read_text())
    assert len(blocks) == 3, blocks  # predict, feedback, metrics
    token_file = tmp_path / "feedback"
    token_file.write_text(TOKEN)
    settings = shared_registry.gateway_settings(feedback_token=TOKEN, log_mode="sync",
                                                prediction_log_url=f"sqlite:///{tmp_path / 'log.db'}")
    with start_gateway(settings, mode="process") as gw:
        setup = setup.replace("http://127.0.0.1:8000", gw.url).replace("/run/secrets/feedback", str(token_file))
        outputs = []
        for block in blocks:
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", setup + block], capture_output=True, text=True,
                                 timeout=60)
            assert run.returncode == 0, f"{block}\n--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}"
            outputs.append(run.stdout)
    predicted, labelled, metrics = outputs
    answer = json.loads(predicted)
    assert set(answer) >= {"request_id", "variant", "model_version", "predictions", "probabilities"}, answer
    assert answer["request_id"].startswith("order-42@") and len(answer["predictions"]) == 1
    assert json.loads(labelled) == {"accepted": 1, "rows": 1}
    assert "nasops_requests_total{" in metrics and "nasops_feedback_total{" in metrics, metrics
