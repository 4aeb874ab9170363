"""Prefect flows, data preparation, MLflow registry glue, configuration and the ``nasops`` CLI."""
