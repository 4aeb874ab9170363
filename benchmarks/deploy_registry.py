"""What the deployable artifact costs at registration, and what each flavour gives when the gateway serves it.

Trains the two quick winners of ``benchmarks/deploy.py`` (an NB201 cell at C=8 N=1 and an MLP) on digits,
registers each through the refresh's own registration (``pipelines.retrain._register``: pt2 model logging, tags,
then ``pipelines.deploy_artifacts.log_deploy_artifacts``) into a temporary SQLite registry, and reports

- ``register_s`` (the whole registration) and ``deploy_s`` (the deploy-artifact step inside it, the version's
  ``nasops.deploy_seconds`` tag), with the int8 policy the objective implies (``--int8 auto|always``);
- the version's latency tags (fp32 / onnx / int8 p50 at batch 1, one thread);
- per flavour (pytorch, onnx, int8 where logged): ``LoadedModel.predict_proba`` p50 at batch 1 in this process
  (the gateway's model call), and ``/predict`` p50 over HTTP against a gateway process (``--http``).

    .venv/bin/python benchmarks/deploy_registry.py --int8 always --http --json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# Run as a script, this file's folder comes first on sys.path and benchmarks/serving.py would shadow the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


def _train_winners(data, seed: int) -> dict:
    """``benchmarks/deploy.py``'s winners (loaded by path: this folder holds a ``serving.py`` that would shadow
    the package if the folder were put on ``sys.path``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nasops_bench_deploy", Path(__file__).with_name("deploy.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_winners(data, seed)


def _p50_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--int8", choices=("auto", "always"), default="always")
    parser.add_argument("--http", action="store_true", help="also time /predict on a gateway process per flavour")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import mlflow
    from mlflow.tracking import MlflowClient

    from monitoring.vocabulary import tag
    from nas.datasets import bundled_task
    from pipelines import deploy_artifacts as da
    from pipelines.retrain import _register
    from serving.flavours import load_flavoured

    torch.set_num_threads(1)
    data = bundled_task("digits", seed=0)
    winners = _train_winners(data, seed=0)
    out: dict = {"int8_policy": args.int8, "models": {}}
    with tempfile.TemporaryDirectory(prefix="nasops-deploy-registry-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient(uri, uri)
        x = np.ascontiguousarray(data.x_test, dtype=np.float32)
        for name, model in winners.items():
            with mlflow.start_run(run_name=name):
                t0 = time.perf_counter()
                version = _register(model, data, model_name=f"bench-{name}", tags={"role": "nas"}, int8=args.int8)
                register_s = time.perf_counter() - t0
            tags = client.get_model_version(f"bench-{name}", version).tags
            row = {"register_s": register_s, "deploy_s": float(tags[tag(da.DEPLOY_SECONDS)]),
                   "tags": {k: tags.get(tag(k)) for k in (da.LATENCY_FP32, da.LATENCY_ONNX, da.LATENCY_INT8,
                                                          da.INT8_ARTIFACT, da.INT8_SKIPPED, da.ONNX_ERROR)},
                   "flavours": {}}
            for flavour in ("pytorch", "onnx", "int8"):
                loaded = load_flavoured(client, f"bench-{name}", "champion", version, flavour)
                if loaded.flavour != flavour:
                    row["flavours"][flavour] = {"served": loaded.flavour, "note": loaded.flavour_note}
                    continue
                one = x[:1]
                loaded.predict_proba(one)
                agree = float((loaded.predict_proba(x).argmax(1) ==
                               load_flavoured(client, f"bench-{name}", "c", version).predict_proba(x).argmax(1))
                              .mean())
                call = functools.partial(loaded.predict_proba, one)
                row["flavours"][flavour] = {"predict_proba_p50_ms": _p50_ms(call, args.calls),
                                            "argmax_agreement_with_pytorch": agree}
            if args.http:
                _http(row, client, f"bench-{name}", version, uri, Path(tmp), x, args.calls)
            out["models"][name] = row
    print(json.dumps(out, indent=None if args.json else 1))
    return 0


def _http(row: dict, client, model_name: str, version: str, uri: str, tmp: Path, x: np.ndarray, calls: int) -> None:
    import httpx

    from monitoring.vocabulary import CHAMPION
    from serving.config import GatewaySettings
    from serving.server import start_gateway

    client.set_registered_model_alias(model_name, CHAMPION, version)
    for flavour, entry in row["flavours"].items():
        if "served" in entry:
            continue
        settings = GatewaySettings(tracking_uri=uri, model_name=model_name, poll_interval_s=0, flavour=flavour,
                                   prediction_log_url=f"sqlite:///{tmp}/log-{model_name}-{flavour}.db",
                                   follow_rollouts=False)
        with start_gateway(settings, mode="process") as gw, httpx.Client(base_url=gw.url, timeout=10) as c:
            body = {"inputs": [x[0].tolist()]}
            for _ in range(30):
                c.post("/predict", json=body).raise_for_status()
            entry["http_predict_p50_ms"] = _p50_ms(lambda c=c, b=body: c.post("/predict", json=b).raise_for_status(),
                                                   calls)


if __name__ == "__main__":
    raise SystemExit(main())
