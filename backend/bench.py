"""The service's performance targets, measured against the real worker, database and API.

`python -m backend.bench [--quick] [--json PATH] [--postgres-url URL]` prints one row per
figure with pass or miss:

- 5a: recording events (the search process's pipe, the worker's flushes every
  0.25 s) costs a search at most 3% of its step time.
- 5b: `backend.ingest.store_events` stores at least 10,000 pruner states per second, on
  SQLite and on PostgreSQL.
- 5c: with 20 clients on a search's event stream, an event reaches them within 1 s at the
  95th percentile, on SQLite and on PostgreSQL.

The PostgreSQL rows need a server URL (`--postgres-url`, default
`$BONSAI_TEST_DATABASE_URL`). The benchmark creates its own database there and drops it
afterwards; without a URL those rows are reported as not measured. `run(quick)` returns
the same rows for `bonsai bench`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from backend._bench_common import BenchmarkRow, make_row, scratch_database
from backend._bench_ingest import measure_ingest
from backend._bench_stream import measure_stream_latency
from backend._bench_worker import measure_recording_cost

__all__ = ["BenchmarkRow", "main", "run"]

logger = logging.getLogger(__name__)

POSTGRES_URL_VAR = "BONSAI_TEST_DATABASE_URL"


def _not_measured(target: str, unit: str, threshold: float, reason: str) -> BenchmarkRow:
    return make_row(target, None, unit, threshold, False, f"not measured: {reason}")


def _measured(
    measure: Callable[[], BenchmarkRow], target: str, unit: str, threshold: float
) -> BenchmarkRow:
    """Run one measurement. A measurement that raises becomes a missed row naming the error."""
    try:
        return measure()
    except Exception as error:
        logger.exception("Benchmark %r failed", target)
        return _not_measured(target, unit, threshold, f"{type(error).__name__}: {error}")


def run(quick: bool, postgres_url: str | None = None) -> list[BenchmarkRow]:
    """Measure every service target and return one row per figure.

    `postgres_url` is an administrative URL of a PostgreSQL server, by default
    `$BONSAI_TEST_DATABASE_URL`; without one the PostgreSQL rows are not measured.
    """
    postgres_url = postgres_url or os.environ.get(POSTGRES_URL_VAR) or None
    rows: list[BenchmarkRow] = []
    with tempfile.TemporaryDirectory(prefix="bonsai-bench-") as scratch:
        root = Path(scratch)

        def recording_cost() -> BenchmarkRow:
            home = root / "worker"
            with scratch_database(None, home) as url:
                return measure_recording_cost(home, url, quick)

        rows.append(
            _measured(recording_cost, "5a event recording costs the worker at most 3%", "%", 3.0)
        )
        for label, url in (("SQLite", None), ("PostgreSQL", postgres_url)):
            ingest_target = f"5b the database stores at least 10,000 pruner states/s ({label})"
            stream_target = f"5c an event reaches 20 stream clients within 1 s at p95 ({label})"
            if label == "PostgreSQL" and url is None:
                reason = f"no PostgreSQL URL (--postgres-url or {POSTGRES_URL_VAR})"
                rows.append(_not_measured(ingest_target, "pruner states/s", 10_000.0, reason))
                rows.append(_not_measured(stream_target, "s", 1.0, reason))
                continue
            directory = root / f"ingest-{label.lower()}"
            directory.mkdir()
            rows.append(
                _measured(
                    partial(measure_ingest, label, url, directory, quick),
                    ingest_target,
                    "pruner states/s",
                    10_000.0,
                )
            )
            rows.append(
                _measured(
                    partial(_stream_on, label, url, root, quick),
                    stream_target,
                    "s",
                    1.0,
                )
            )
    return rows


def _stream_on(label: str, admin_url: str | None, root: Path, quick: bool) -> BenchmarkRow:
    home = root / f"stream-{label.lower()}"
    home.mkdir()
    if admin_url is None:
        return measure_stream_latency(label, home, None, quick)
    with scratch_database(admin_url, home) as url:
        return measure_stream_latency(label, home, url, quick)


def format_table(rows: list[BenchmarkRow]) -> str:
    """Format the rows as a plain-text table, then each row's detail."""
    lines = [f"{'target':<72} {'value':>12} {'threshold':>12}  result"]
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:,.3f}"
        result = "pass" if row["passed"] else "miss"
        lines.append(
            f"{row['target']:<72} {value:>12} {row['threshold']:>12,.3f}  {result} ({row['unit']})"
        )
    lines.append("")
    lines += [f"{row['target']}: {row['detail']}" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backend.bench",
        description="Measure the service's performance targets and print pass or miss.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller runs that finish in about a minute"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to PATH")
    parser.add_argument(
        "--postgres-url",
        default=None,
        help=f"administrative URL of a PostgreSQL server (default: ${POSTGRES_URL_VAR}); "
        "the benchmark creates a database there and drops it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")
    rows = run(args.quick, args.postgres_url)
    sys.stdout.write(format_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
