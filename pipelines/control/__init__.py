"""The rollout control plane: everything that steers a rollout after registration, without running a model.

``config`` (rollout policy), ``rollout`` (the state machine), ``versions`` + ``reference`` (the two versions'
ModelRefs and the drift reference, fixed at start and stored with the record), ``context`` (one reconcile step's
view), ``controller`` (start, the reconcile step, evidence and the registry decision), ``commands`` (operator
verbs), ``drift`` and ``evidence`` (what is measured and logged), ``deployment`` (the controller as a Prefect
deployment), ``handover`` (a rollout on a running gateway).

Import rule (checked by ``tests/test_control_plane.py``): this package imports ``monitoring`` (and
``monitoring.core``), the light ``pipelines`` modules (errors, settings, tracking, registry reading and alias moves,
promotion, schema checks, the gateway admin client), MLflow and Prefect, and never ``nas``, PyTorch or
``pipelines.canary``: the Prefect deployment runs each reconcile step as a new process, and importing PyTorch there
cost a minute per interval on a busy machine.
"""
