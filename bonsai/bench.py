"""`bonsai bench`: the engine's performance targets, each printed as a ratio with pass or miss.

1. Training throughput of the hyper-connected network against the naive hypernet
   (a file outside the package, imported from `--naive`), with the same losses.
2. Pruning pays: after deadheading to memory compression c of about 0.5 and 0.25,
   a training step costs at most (c + 0.15) times the hyper-connected step.
3. The memory model's prediction is within 10% of a measured training step.
4. The discovered model trains and infers within 5% of the same architecture
   written by hand.
5. Other packages' benchmarks (the service's), found through the
   ``bonsai.benchmarks`` entry-point group: each entry point is a function
   ``run(quick: bool)`` returning rows with ``target``, ``value``, ``unit``,
   ``threshold``, ``passed`` and ``detail``. Only run when asked (`--targets 5`).

docs/benchmarks.md records the figures and the commands behind them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["register", "run_bench"]

QUICK_SIZES = [(8, 3, 4, 16, 32)]
FULL_SIZES = [(8, 3, 4, 16, 32), (16, 5, 4, 32, 64)]
CIFAR_SIZES = [(36, 8, 4, 32, 64)]
DEFAULT_NAIVE = Path("..") / "shared" / "bench" / "naive_hypernet.py"


def register(subparsers: Any) -> None:
    """Add the `bench` subcommand to the `bonsai` command line."""
    parser = subparsers.add_parser(
        "bench", help="measure the engine's performance targets and print pass or miss"
    )
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument(
        "--quick",
        action="store_true",
        help="only the small size: 8 channels, 3 cells, 4 nodes, 16x16, batch 32",
    )
    sizes.add_argument(
        "--cifar",
        action="store_true",
        help="the CIFAR-10 size: 36 channels, 8 cells, 4 nodes, 32x32, batch 64",
    )
    parser.add_argument(
        "--naive",
        default=None,
        help="path of the naive hypernet file for target 1 "
        f"(default: {DEFAULT_NAIVE} from the repository root)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--targets",
        default="1,2,3,4",
        help="comma-separated targets to run; 5 runs the service benchmarks (default 1,2,3,4)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed steps per variant (default 7, quick 9)"
    )
    # One thread, as `bonsai.search.DEFAULT_CPU_THREADS` gives a CPU search.
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads of both networks (default 1, as a CPU search trains)",
    )
    parser.add_argument("--json", default=None, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--fail-on-miss", action="store_true", help="exit with status 1 if a target is missed"
    )
    parser.set_defaults(handler=_command_bench)


def _repository_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _command_bench(args: argparse.Namespace) -> int:
    import torch

    from bonsai.training import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    targets = {int(part) for part in args.targets.split(",") if part.strip()}
    unknown = targets - {1, 2, 3, 4, 5}
    if unknown:
        raise ValueError(f"unknown targets {sorted(unknown)}; choose from 1, 2, 3, 4, 5")
    if args.quick:
        sizes, repeats = QUICK_SIZES, 9
    elif args.cifar:
        sizes, repeats = CIFAR_SIZES, 5
    else:
        sizes, repeats = FULL_SIZES, 7
    if args.repeats is not None:
        if args.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
        repeats = args.repeats
    naive = Path(args.naive) if args.naive else _repository_root() / DEFAULT_NAIVE
    report = run_bench(sizes, targets, resolve_device(args.device), naive, repeats, echo=True)
    if 5 in targets:
        report["results"] += run_plugin_benchmarks(quick=args.quick, echo=True)
    else:
        print("target 5  service benchmarks: not run here; add 5 to --targets to run them")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    missed = [r for r in report["results"] if r["passed"] is False]
    return 1 if args.fail_on_miss and missed else 0


def machine(device: Any = None) -> dict[str, Any]:
    """Describe the machine and software of the figures, training on `device` (default CPU)."""
    import os

    import torch

    from bonsai import native

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        # Whether CPU training takes the kernels of `bonsai.native`: "on" or "off (reason)".
        "c_kernels": native.state(device),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bench(
    sizes: list[tuple[int, int, int, int, int]],
    targets: set[int],
    device: Any,
    naive_path: Path,
    repeats: int,
    warmup: int = 2,
    echo: bool = False,
) -> dict[str, Any]:
    """Run the chosen targets at every size and return the report (what `--json` writes)."""
    from bonsai._bench_targets import BenchSize, load_naive

    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(device),
        "device": str(device),
        "repeats": repeats,
        "results": [],
    }
    if echo:
        info = report["machine"]
        print(
            f"bonsai bench on {device}: {info['cpu']}, {info['nproc']} CPUs, "
            f"torch {info['torch']} with {info['threads']} "
            f"thread{'' if info['threads'] == 1 else 's'}, "
            f"C kernels {info['c_kernels']}"
        )
    started = time.monotonic()
    naive = load_naive(naive_path) if 1 in targets else None
    for size_tuple in sizes:
        size = BenchSize(*size_tuple)
        if echo:
            print(f"-- {size.label()}")
        for result in _run_size(size, targets, device, naive, naive_path, repeats, warmup):
            report["results"].append(result)
            if echo:
                print(format_result(result), flush=True)
    report["seconds"] = time.monotonic() - started
    if echo:
        passed = sum(1 for r in report["results"] if r["passed"])
        print(f"{passed} of {len(report['results'])} passed in {report['seconds']:.0f} s")
    return report


def _run_size(
    size: Any,
    targets: set[int],
    device: Any,
    naive: Any,
    naive_path: Path,
    repeats: int,
    warmup: int,
) -> Iterator[dict[str, Any]]:
    from bonsai._bench_targets import (
        memory_model_target,
        pruning_target,
        retrained_model_target,
        throughput_target,
    )

    if 1 in targets:
        yield throughput_target(naive, naive_path, size, device, repeats, warmup)
    if 2 in targets:
        yield from pruning_target(size, device, repeats, warmup)
    if 3 in targets:
        yield from memory_model_target(size, device)
    if 4 in targets:
        # Target 4's steps are short, so they get three times the repeats.
        yield from retrained_model_target(size, device, 3 * repeats, warmup)


def run_plugin_benchmarks(quick: bool, echo: bool = False) -> list[dict[str, Any]]:
    """Run every ``bonsai.benchmarks`` entry point; one that fails becomes a missed result."""
    from importlib.metadata import entry_points

    results = []
    for entry in sorted(entry_points(group="bonsai.benchmarks"), key=lambda e: e.name):
        try:
            rows = list(entry.load()(quick))
        except Exception as error:  # noqa: BLE001 - a broken plug-in is reported, not raised
            rows = [
                {
                    "target": f"{entry.name} benchmark",
                    "value": None,
                    "unit": "",
                    "threshold": None,
                    "passed": False,
                    "detail": f"failed: {type(error).__name__}: {error}",
                }
            ]
        for row in rows:
            result = {
                "target": 5,
                "name": f"{entry.name}: {row['target']}",
                "ratio": row["value"],
                "limit": f"{row['threshold']} {row['unit']}".strip(),
                "passed": bool(row["passed"]),
                "status": "pass" if row["passed"] else "miss",
                "details": dict(row),
            }
            results.append(result)
            if echo:
                print(
                    f"target 5  {result['name']}: {row['value']} {row['unit']} "
                    f"(limit {result['limit']}): {result['status']}  [{row['detail']}]"
                )
    return results


def format_result(result: dict[str, Any]) -> str:
    """One line per result: target, name, ratio, limit, pass or miss, and the key figures."""
    details = result["details"]
    head = f"target {result['target']}  {result['name']}: "
    if result["passed"] is None:
        return head + details.get("reason", "skipped")
    text = f"{head}ratio {result['ratio']:.3f} (limit {result['limit']}): {result['status']}"
    if result["target"] == 1:
        equivalence = details["equivalence"]
        text += (
            f"  [engine {details['engine_images_per_second']:.1f} images/s, naive "
            f"{details['naive_images_per_second']:.1f} images/s; losses differ by at most "
            f"{equivalence['max_relative_difference']:.1e} relative]"
        )
    elif result["target"] == 2:
        text += f"  [{details['pruners']} of {details['hyper_connected_pruners']} pruners left]"
    elif result["target"] == 3:
        text += (
            f"  [predicted {details['predicted_bytes'] / 2**20:.1f} MiB, measured "
            f"{details['measured_bytes'] / 2**20:.1f} MiB]"
        )
    elif result["target"] == 4:
        text += f"  [outputs differ by at most {details['max_output_difference']:.1e}]"
    return text
