"""The small core every room but ``nas`` may import: settings, the vocabulary as enums, one object per task kind,
and the typed reference to a registered model that passes between the three planes.

It lives under ``monitoring`` because that is the room the house's arrows let ``pipelines`` and ``serving`` both
import, and it imports nothing of ours and nothing heavy (no PyTorch, no MLflow, no Prefect): the rollout control
plane and the gateway import it on their hot start-up paths.
"""
