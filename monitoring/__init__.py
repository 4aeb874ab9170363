"""Measuring served models: Prometheus metric definitions, the prediction log, drift, and the canary judge.

Imports nothing else of nasops, so the judge and the drift functions can be used from a notebook or another
service.
"""
