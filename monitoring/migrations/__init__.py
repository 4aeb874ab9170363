"""Alembic's script directory for the prediction-log database (``env.py`` and ``versions/``): run through
:func:`monitoring.schema.upgrade` (``nasops db upgrade``), never with the ``alembic`` command line, which would
look for an ``alembic.ini`` and use the ``alembic_version`` table that MLflow owns."""
