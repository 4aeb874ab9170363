"""The deployable forms of a registered version, logged next to it: ONNX (checked) and, where it helps, int8.

Registration (:mod:`pipelines.retrain`) calls :func:`log_deploy_artifacts` once per new version, inside the
version's own training run. It

1. exports the served network to ONNX (:func:`nas.deploy.export_onnx`) and runs the validation rows through
   onnxruntime next to PyTorch (:func:`nas.deploy.check_onnx`); only a file that agrees (max abs logit difference
   within tolerance, every argmax the same) is logged, as ``deploy/model.onnx`` of that run;
2. quantizes it to int8 (:func:`nas.deploy.quantize_int8`) and logs the TorchScript file ``deploy/model_int8.pt``
   when int8 is faster than fp32 at batch 1 (``int8="auto"``), always (``"always"``: the ``latency_int8``
   objective asked for an int8 deployment) or never;
3. times fp32 eager, onnxruntime and int8 at batch 1 (one thread each, as the gateway serves) and writes the p50s
   as version tags.

Nothing here raises: a failed export, check or quantization is a tag (``onnx_error``, ``int8_error``) with the
reason, and the version stays registered and servable in PyTorch. The gateway reads the artifacts back by the tag
names below (:mod:`serving.flavours`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from monitoring.vocabulary import tag

log = logging.getLogger(__name__)

Int8Policy = Literal["auto", "always", "never"]
ARTIFACT_DIR = "deploy"
ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.pt"

# Version tag keys (without the prefix; written with monitoring.vocabulary.tag()).
ONNX_ARTIFACT = "onnx_artifact"
ONNX_CHECK = "onnx_check"
ONNX_ERROR = "onnx_error"
INT8_ARTIFACT = "int8_artifact"
INT8_ERROR = "int8_error"
INT8_SKIPPED = "int8_skipped"
INT8_METHOD = "int8_method"
INT8_AGREEMENT = "int8_argmax_agreement"
LATENCY_FP32 = "latency_fp32_p50_ms"
LATENCY_ONNX = "latency_onnx_p50_ms"
LATENCY_INT8 = "latency_int8_p50_ms"
DEPLOY_SECONDS = "deploy_seconds"


@dataclass
class DeployReport:
    """What was logged for one version, and why not where something was not."""

    onnx_artifact: str | None = None
    int8_artifact: str | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    onnx_check: dict[str, Any] | None = None
    int8_agreement: float | None = None
    int8_method: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    int8_skipped: str | None = None
    seconds: float = 0.0

    def tags(self) -> dict[str, str]:
        """The version tags (full ``nasops.*`` keys) this report stands for."""
        out: dict[str, Any] = {
            ONNX_ARTIFACT: self.onnx_artifact, INT8_ARTIFACT: self.int8_artifact,
            ONNX_CHECK: json.dumps(self.onnx_check) if self.onnx_check else None,
            ONNX_ERROR: self.errors.get("onnx"), INT8_ERROR: self.errors.get("int8"),
            INT8_SKIPPED: self.int8_skipped, INT8_METHOD: self.int8_method,
            INT8_AGREEMENT: None if self.int8_agreement is None else f"{self.int8_agreement:.4f}",
            LATENCY_FP32: self.latency_ms.get("fp32"), LATENCY_ONNX: self.latency_ms.get("onnx"),
            LATENCY_INT8: self.latency_ms.get("int8"), DEPLOY_SECONDS: f"{self.seconds:.3f}",
        }
        return {tag(k): (f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in out.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reason(exc: BaseException) -> str:
    """One line for a tag (MLflow tag values are capped; a traceback belongs in the log)."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:480]


def _p50(fn: Any, x: Any, repeats: int) -> float:
    from nas.deploy import latency_ms

    return float(np.median(latency_ms(fn, x, repeats=repeats, warmup=5)))


def build_deploy_artifacts(model: nn.Module, x_check: np.ndarray, calibration: np.ndarray, out: Path, *,
                           num_features: int | None = None, int8: Int8Policy = "auto", repeats: int = 30,
                           atol: float = 1e-4) -> tuple[DeployReport, dict[str, Path]]:
    """Export, check, quantize and time ``model`` into ``out``; returns the report and the files worth logging.

    ``x_check``/``calibration``: ``(n, F)`` float32 rows as the model takes them (validation / training rows).
    """
    from nas import deploy

    started = time.perf_counter()
    report, files = DeployReport(), {}
    model = model.eval()
    x_check = np.ascontiguousarray(x_check, dtype=np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # time as the gateway serves (torch_threads=1, onnxruntime one intra-op thread)
    try:
        width = deploy.num_features_of(model, num_features if num_features is not None else x_check.shape[1])
        one = torch.from_numpy(x_check[:1])
        with torch.no_grad():
            report.latency_ms["fp32"] = _p50(model, one, repeats)
        try:
            path = deploy.export_onnx(model, out / ONNX_FILE, num_features=width)
            check = deploy.check_onnx(model, path, x_check, atol=atol)
            report.onnx_check = check.to_dict()
            if not check.ok:
                raise ValueError(f"onnxruntime disagrees with PyTorch on {check.rows} rows: max abs logit "
                                 f"difference {check.max_abs_diff:.3g} (tolerance {atol:g}), argmax agreement "
                                 f"{check.argmax_agreement:.4f}")
            session = deploy.OnnxClassifier(path, threads=1)
            report.latency_ms["onnx"] = _p50(session.logits, x_check[:1], repeats)
            files["onnx"] = path
        except Exception as exc:  # recorded, never raised: the version stays servable in PyTorch
            report.errors["onnx"] = _reason(exc)
            log.warning("ONNX export of the registered model failed: %s", report.errors["onnx"])
        if int8 != "never":
            _int8_form(model, calibration, x_check, out, width, int8, repeats, report, files)
        else:
            report.int8_skipped = "int8 not asked for"
    except Exception as exc:  # e.g. the fp32 model itself cannot be timed on these rows
        report.errors.setdefault("onnx", _reason(exc))
    finally:
        torch.set_num_threads(threads)
        report.seconds = time.perf_counter() - started
    return report, files


def _int8_form(model: nn.Module, calibration: np.ndarray, x_check: np.ndarray, out: Path, width: int,
               int8: Int8Policy, repeats: int, report: DeployReport, files: dict[str, Path]) -> None:
    """Quantize, save, reload and time the int8 form; kept (in ``files``) when asked for or faster than fp32.
    A failure is recorded in ``report``, never raised."""
    from nas import deploy

    try:
        q = deploy.quantize_int8(model, calibration)
        report.int8_method = "static" if deploy.has_conv(model) else "dynamic"
        path = deploy.save_int8(q, out / INT8_FILE, width)
        q = deploy.load_int8(path)  # time and check the file the gateway will load, not the live module
        with torch.no_grad():
            xt = torch.from_numpy(x_check)
            report.int8_agreement = float((q(xt).argmax(1) == model(xt).argmax(1)).float().mean())
            report.latency_ms["int8"] = _p50(q, xt[:1], repeats)
        faster = report.latency_ms["int8"] < report.latency_ms["fp32"]
        if int8 == "always" or faster:
            files["int8"] = path
        else:
            report.int8_skipped = (f"int8 p50 {report.latency_ms['int8']:.3f} ms is not faster than fp32 "
                                   f"{report.latency_ms['fp32']:.3f} ms at batch 1")
    except Exception as exc:
        report.errors["int8"] = _reason(exc)
        log.warning("int8 quantization of the registered model failed: %s", report.errors["int8"])


def log_deploy_artifacts(model: nn.Module, x_check: np.ndarray, calibration: np.ndarray, *, model_name: str,
                         version: str, client: Any = None, run_id: str | None = None,
                         num_features: int | None = None, int8: Int8Policy = "auto",
                         repeats: int = 30) -> DeployReport:
    """Build the deployable forms of ``model`` and log them as artifacts of ``version``'s run, with the tags.

    ``run_id`` defaults to the version's own run (where :func:`pipelines.registry.log_and_register` logged it).
    Never raises: a failure to build, log or tag is a warning and, where the registry still answers, a tag.
    """
    from pipelines import registry

    started = time.perf_counter()
    report = DeployReport()
    try:
        client = client or registry.client_for_active()
        run_id = run_id or client.get_model_version(model_name, version).run_id
        with tempfile.TemporaryDirectory(prefix="nasops-deploy-") as tmp:
            report, files = build_deploy_artifacts(model, x_check, calibration, Path(tmp),
                                                   num_features=num_features, int8=int8, repeats=repeats)
            for kind, path in files.items():
                try:
                    client.log_artifact(run_id, str(path), artifact_path=ARTIFACT_DIR)
                    setattr(report, f"{kind}_artifact", f"{ARTIFACT_DIR}/{path.name}")
                except Exception as exc:
                    report.errors[kind] = f"logging the artifact failed: {_reason(exc)}"
            (Path(tmp) / "deploy_report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
            client.log_artifact(run_id, str(Path(tmp) / "deploy_report.json"), artifact_path=ARTIFACT_DIR)
        report.seconds = time.perf_counter() - started
        for key, value in report.tags().items():
            client.set_model_version_tag(model_name, str(version), key, value)
    except Exception as exc:
        report.errors.setdefault("deploy", _reason(exc))
        log.warning("deploy artifacts of %s version %s not logged: %s", model_name, version, report.errors["deploy"])
        try:
            if client is not None:
                client.set_model_version_tag(model_name, str(version), tag(ONNX_ERROR), report.errors["deploy"])
        except Exception:  # the registry itself is gone: the warning above is all there is
            pass
    return report
