"""The production :class:`~serving.backend.ModelBackend`: versions from the MLflow registry by alias, loaded in the
configured form (PyTorch, ONNX or int8; :mod:`serving.flavours`)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from serving.flavours import load_flavoured
from serving.models import LoadedModel, resolve_alias


class MlflowRegistryBackend:
    """``models:/<model_name>@<alias>`` through the gateway's own client (never MLflow's process-wide URIs)."""

    def __init__(self, tracking_uri: str, model_name: str, *, flavour: str = "pytorch", torch_threads: int = 1) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.model_name = model_name
        self.flavour = flavour
        self.torch_threads = torch_threads

    def start(self) -> None:
        import torch

        torch.set_num_threads(self.torch_threads)

    def resolve(self, alias: str) -> str | None:
        return resolve_alias(self.client, self.model_name, alias)

    def load(self, alias: str, version: str, load_as: str) -> LoadedModel:
        return load_flavoured(self.client, self.model_name, load_as, version, self.flavour)
