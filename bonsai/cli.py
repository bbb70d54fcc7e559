"""The `bonsai` command line: search, show, train-genotype, evaluate, estimate, bench.

Other packages add subcommands (the service's `serve` and `worker`) through the
``bonsai.commands`` entry-point group: each entry point is a function
``register(subparsers)`` that adds its parser and sets ``handler=fn`` with
``fn(args) -> int``. `bonsai/` imports none of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per search-config field; unset options keep the preset's default."""
    from bonsai.config import config_fields

    for spec in config_fields():
        name = spec["name"]
        if name in {"extra"}:
            continue
        flag = "--" + name.replace("_", "-")
        unit = f" [{spec['unit']}]" if spec["unit"] else ""
        default = spec["default"]
        if isinstance(default, list):
            default_text = ",".join(default)
        else:
            default_text = "empty" if default in (None, "") else default
        help_text = f"{spec['help']}{unit} (preset default: {default_text})"
        if spec["type"] == "bool":
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag, dest=name, default=None, metavar=name.upper(), help=help_text
            )


def _config_from_args(args: argparse.Namespace):
    from bonsai.config import SearchConfig, config_fields

    values: dict[str, Any] = {}
    types = {spec["name"]: spec["type"] for spec in config_fields()}
    for name, kind in types.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        values[name] = _parse_option(name, kind, value)
    return SearchConfig.from_dict(values)


def _parse_option(name: str, kind: str, value: Any) -> Any:
    from bonsai.config import ConfigError

    if kind == "bool" or not isinstance(value, str):
        return value
    if name == "budget":
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {value!r}") from None
    if kind == "list":
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _ProgressBar:
    """One tqdm bar per epoch on stderr, and a summary line per epoch on stdout."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None
        self.epoch = -1

    def update(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        if epoch != self.epoch:
            self.close()
            self.epoch = epoch
            self.bar = self._tqdm(total=batches, desc=f"epoch {epoch}", unit="batch", leave=False)
        assert self.bar is not None
        self.bar.update(batch - self.bar.n)
        self.bar.set_postfix(loss=f"{loss:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_event(event: dict[str, Any], bar: _ProgressBar | None) -> None:
    from bonsai.config import format_size

    data = event["data"]
    kind = event["type"]
    if kind == "search_started":
        targets = ", ".join("-" if t is None else f"{t:.3f}" for t in data["targets"])
        print(
            f"searching on {data['dataset']['name']} ({data['device']}, C kernels "
            f"{data.get('c_kernels', 'unknown')}): budget "
            f"{format_size(data['budget'])}, hyper-connected "
            f"{format_size(data['hyper_connected_memory'])}, "
            f"targets per section {targets}",
            flush=True,
        )
    elif kind == "section_added":
        types = "".join("R" if c["type"] == "reduction" else "N" for c in data["cells"])
        pruners = sum(len(c["pruners"]) for c in data["cells"])
        print(
            f"section {data['section']} ({types}) added at epoch {data['start_epoch']}: "
            f"{pruners} pruners",
            flush=True,
        )
    elif kind == "epoch_end":
        if bar is not None:
            bar.close()
        compression = sum(data["compression"]) / max(len(data["compression"]), 1)
        target = data["targets"][0] if data["targets"] else None
        target_text = "" if target is None else f" (target {target:.3f})"
        print(
            f"epoch {event['epoch']:>3}  section {data['section']}  "
            f"train {data['train_accuracy']:.2f}%  "
            f"test {data['test_accuracy']:.2f}%  loss {data['train_loss']:.3f}  compression "
            f"{compression:.3f}{target_text}  memory {format_size(data['memory_measured'])}  "
            f"deadheaded {data['deadheaded_total']}  {data['elapsed']:.0f} s",
            flush=True,
        )
    elif kind == "deadheaded" and data["reason"] == "forced":
        print(f"cut {len(data['pruner_ids'])} connections to meet the target", flush=True)
    elif kind == "failed":
        print(f"search failed: {data['reason']}", file=sys.stderr, flush=True)


def _command_search(args: argparse.Namespace) -> int:
    from bonsai.search import run_search

    config = _config_from_args(args)
    out = Path(args.out)
    bar = None if args.quiet else _ProgressBar()
    result = run_search(
        config,
        on_event=None if args.quiet else lambda event: _print_event(event, bar),
        workdir=out,
        resume=args.resume,
        progress=bar.update if bar is not None else None,
    )
    if bar is not None:
        bar.close()
    if result.state == "succeeded":
        print(
            f"done: test accuracy {result.test_accuracy:.2f}%, {result.params} parameters, "
            f"compression {result.compression:.3f}; wrote {out}/genotype.json, checkpoint.pt, "
            "state.pt and events.jsonl"
        )
        return 0
    if result.state == "cancelled":
        print("search cancelled; resume it with --resume", file=sys.stderr)
        return 130
    print(f"search failed: {result.error}", file=sys.stderr)
    return 1


def _command_show(args: argparse.Namespace) -> int:
    from bonsai.genotype import load_genotype
    from bonsai.model import build_model

    genotype = load_genotype(args.genotype)
    model = build_model(genotype)
    print(
        f"genotype {args.genotype}: {len(genotype.cells)} cells "
        f"in {len(genotype.sections)} sections"
    )
    for cell, module in zip(genotype.cells, model.cells, strict=True):
        params = sum(p.numel() for p in module.parameters())
        print(
            f"cell {cell['index']} ({cell['type']}, section {cell['section']}, "
            f"{cell['channels']} channels, {cell['resolution']}x{cell['resolution']}): "
            f"compression {cell.get('compression', 1.0):.3f}, "
            f"{params} parameters"
        )
        sources = ", ".join(term["source"] for term in cell["input1"]) or "none"
        print(f"  input 1 <- {sources}")
        for edge in cell["edges"]:
            ops = ", ".join(entry["op"] for entry in edge["ops"])
            print(
                f"  {_node_name(edge['source'], cell['nodes'])} -> "
                f"{_node_name(edge['target'], cell['nodes'])}: {ops}"
            )
    search = genotype.data.get("search", {})
    accuracy = search.get("test_accuracy")
    accuracy_text = f", test accuracy {accuracy:.2f}%" if accuracy is not None else ""
    print(
        f"total: {model.count_parameters()} parameters, "
        f"compression {genotype.data['compression']:.3f}"
        f"{accuracy_text}"
    )
    return 0


def _node_name(node: int, nodes: int) -> str:
    if node == 0:
        return "in0"
    if node == 1:
        return "in1"
    if node == nodes + 1:
        return "out"
    return f"n{node}"


def _command_train_genotype(args: argparse.Namespace) -> int:
    from bonsai.retrain import train_genotype

    result = train_genotype(
        args.genotype,
        dataset=args.dataset,
        epochs=int(args.epochs),
        out=Path(args.out),
        data_dir=args.data_dir,
        batch_size=int(args.batch_size),
        lr=float(args.lr),
        device=args.device,
        seed=int(args.seed),
        show_progress=not args.quiet,
        num_threads=int(args.num_threads),
    )
    print(
        f"trained: test accuracy {result['test_accuracy']:.2f}%, {result['params']} "
        f"parameters; wrote {args.out}/checkpoint.pt"
    )
    return 0


def _command_evaluate(args: argparse.Namespace) -> int:
    from bonsai.retrain import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, device=args.device
    )
    print(f"test accuracy: {result['test_accuracy']:.2f}%")
    return 0


def _command_estimate(args: argparse.Namespace) -> int:
    from bonsai.config import format_size
    from bonsai.estimate import estimate_memory

    estimate = estimate_memory(_config_from_args(args))
    if args.json:
        print(json.dumps(estimate, indent=2))
        return 0 if estimate["fits"] else 1
    print(
        f"budget {format_size(estimate['budget'])}, "
        f"hyper-connected {format_size(estimate['hyper_connected_bytes'])}"
    )
    for section in estimate["sections"]:
        target = "-" if section["target"] is None else f"{section['target']:.3f}"
        print(
            f"section {section['section']} ({''.join(t[0].upper() for t in section['types'])}): "
            f"{format_size(section['predicted_bytes'])} once appended, target {target}"
        )
    if estimate["error"]:
        print(estimate["error"], file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bonsai",
        description="Bonsai-Net: architecture search with differentiable, memory-aware pruners.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = commands.add_parser(
        "search", help="run a search and write its genotype, checkpoint and events"
    )
    _add_config_options(search)
    search.add_argument(
        "--out",
        required=True,
        help="work directory for genotype.json, checkpoint.pt, state.pt, events.jsonl",
    )
    search.add_argument(
        "--resume", action="store_true", help="continue the search saved in --out/state.pt"
    )
    search.add_argument("--quiet", action="store_true", help="print only the final line")
    search.set_defaults(handler=_command_search)

    show = commands.add_parser(
        "show", help="print a genotype's cells, operations, parameters and compression"
    )
    show.add_argument("genotype", help="path of a genotype.json")
    show.set_defaults(handler=_command_show)

    train = commands.add_parser(
        "train-genotype", help="train a discovered architecture from scratch"
    )
    train.add_argument("genotype", help="path of a genotype.json")
    train.add_argument("--dataset", required=True, help="data set to train on")
    train.add_argument("--epochs", required=True, help="training epochs")
    train.add_argument("--out", required=True, help="directory for checkpoint.pt")
    train.add_argument("--data-dir", default=None, help="directory holding the data set's files")
    train.add_argument("--batch-size", default=64, help="images per batch (default 64)")
    train.add_argument(
        "--lr", default=0.05, help="initial SGD learning rate, cosine-annealed (default 0.05)"
    )
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    train.add_argument("--seed", default=0, help="random seed (default 0)")
    train.add_argument("--num-threads", default=1, help="torch threads on the CPU (default 1)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_command_train_genotype)

    evaluate = commands.add_parser("evaluate", help="print a checkpoint's test accuracy")
    evaluate.add_argument("checkpoint", help="path of a checkpoint.pt")
    evaluate.add_argument("--dataset", required=True, help="data set to evaluate on")
    evaluate.add_argument(
        "--data-dir", default=None, help="directory holding the data set's files"
    )
    evaluate.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)"
    )
    evaluate.set_defaults(handler=_command_evaluate)

    estimate = commands.add_parser(
        "estimate", help="predict each section's training memory against the budget"
    )
    _add_config_options(estimate)
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    estimate.set_defaults(handler=_command_estimate)

    for entry in _plugin_entry_points():
        try:
            entry.load()(commands)
        except Exception as error:  # noqa: BLE001 - a broken plug-in must not break the engine's commands
            logger.warning(
                "could not load the %r subcommand from %s: %s", entry.name, entry.value, error
            )
    return parser


def _plugin_entry_points() -> list[Any]:
    return sorted(entry_points(group="bonsai.commands"), key=lambda entry: entry.name)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from bonsai.config import ConfigError
    from bonsai.data import DatasetNotFoundError
    from bonsai.genotype import GenotypeError
    from bonsai.memory import SectionFitError

    started = time.monotonic()
    try:
        return int(args.handler(args))
    except ConfigError as error:
        option = "--" + error.field.replace("_", "-")
        print(f"bonsai: invalid {option}: {error.message}", file=sys.stderr)
    except (
        DatasetNotFoundError,
        GenotypeError,
        SectionFitError,
        FileNotFoundError,
        ValueError,
    ) as error:
        print(f"bonsai: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"bonsai: interrupted after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout closed it (`bonsai show ... | head`). Point stdout at
        # /dev/null so that flushing it at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 2


if __name__ == "__main__":
    sys.exit(main())
