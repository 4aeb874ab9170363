"""Insert throughput of the prediction log on SQLite, with the replay key of schema 0005 (a unique 4-column index,
``INSERT OR IGNORE``) against the layout before it (an index on ``request_id``, a plain insert): what idempotent
replay costs every commit. ``python benchmarks/log_insert.py [--batches 400]``; prints rows/s per layout."""

from __future__ import annotations

import argparse
import tempfile
import time

from monitoring.prediction_log import create_log_engine, insert_rows, predictions


def _rows(k: int, n: int = 256) -> list[dict]:
    now = time.time()
    return [{"request_id": f"r{k}-{i}@anon", "row": 0, "ts": now, "variant": "champion", "shadow": False,
             "model_version": "1", "inputs": "[" + ",".join(["0.123456"] * 64) + "]", "prediction": "1",
             "probabilities": "[0.1,0.9]", "latency_ms": 1.0, "compute_ms": 0.1, "status": "ok",
             "model_name": "m", "instance": "i"} for i in range(n)]


def measure(layout: str, batches: int) -> float:
    """Rows per second for ``batches`` commits of 256 rows (the writer's batch) in a fresh SQLite file."""
    engine = create_log_engine(f"sqlite:///{tempfile.mkdtemp()}/log.db")
    if layout == "before 0005":
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX uq_predictions_request_row_variant_ts")
            conn.exec_driver_sql("CREATE INDEX ix_predictions_request_id ON predictions (request_id)")
    work = [_rows(k) for k in range(batches)]
    start = time.perf_counter()
    for batch in work:
        if layout == "before 0005":
            with engine.begin() as conn:
                conn.execute(predictions.insert(), batch)
        else:
            insert_rows(engine, batch)
    engine.dispose()
    return batches * 256 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    for layout in ("before 0005", "0005"):
        print(f"{layout}: {measure(layout, args.batches):,.0f} rows/s")


if __name__ == "__main__":
    main()
