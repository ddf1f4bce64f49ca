"""The ``vecdb`` command: ``version``, ``serve``, ``bench`` and ``datasets``."""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from vecdb.errors import InvalidArgumentError, VecdbError


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_params(text: str) -> dict[str, Any]:
    """``"M=16,ef_construction=200"`` -> ``{"M": 16, "ef_construction": 200}``."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise InvalidArgumentError(f"expected name=value, got {part!r}")
        key, value = part.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def parse_grid(text: str) -> list[dict[str, Any]]:
    """``"ef=16;ef=32"`` -> ``[{"ef": 16}, {"ef": 32}]``; ``"ef=16,32,64"`` expands one knob."""
    if not text:
        return [{}]
    if ";" not in text and text.count("=") == 1:
        key, values = text.split("=", 1)
        return [{key.strip(): _parse_value(v.strip())} for v in values.split(",") if v.strip()]
    return [parse_params(chunk) for chunk in text.split(";") if chunk.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _bench(args: argparse.Namespace) -> int:
    from vecdb.bench.report import render
    from vecdb.bench.runner import RunConfig, raise_if_invalid, run, save

    targets = _names(args.targets)
    baselines = _names(args.baseline) if args.baseline else [t for t in targets if not t.startswith("vecdb")][:1]
    config = RunConfig(dataset=args.dataset, targets=targets, build_params=parse_params(args.build),
                       search_grid=parse_grid(args.search), k=args.k, threads=_ints(args.threads),
                       batches=_ints(args.batch), selectivities=_floats(args.filter),
                       filter_strategies=_names(args.filter_strategies), baselines=baselines,
                       at_recall=args.at_recall, max_queries=args.max_queries, build_threads=args.build_threads,
                       repeats=args.repeats, stat=args.stat, memory=args.memory, allow_busy=args.allow_busy,
                       check_knobs=not args.skip_knob_check)
    record = run(config, argv=args.argv)
    print(render(record))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("bench/results") / f"{Path(args.dataset).name}__{'+'.join(config.targets)}__{stamp}.json"
    print(f"\nsaved {save(record, out)}")
    raise_if_invalid(record)
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from vecdb.data import dataset_names

    print("\n".join(dataset_names()))
    return 0


def _version(args: argparse.Namespace) -> int:
    import vecdb

    print(f"vecdb {vecdb.__version__}")
    return 0


def _serve(argv: Sequence[str]) -> int:
    from vecdb.server.__main__ import main as serve_main

    return int(serve_main(list(argv)) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``vecdb`` command."""
    from vecdb.bench.adapters import TARGETS

    parser = argparse.ArgumentParser(prog="vecdb", description="vecdb vector database")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version").set_defaults(func=_version)
    sub.add_parser("datasets", help="list dataset names the benchmark can load").set_defaults(func=_datasets)
    # `serve` owns its flags (vecdb.server.__main__); main() hands them over untouched
    sub.add_parser("serve", help="run the gRPC server (see `vecdb serve --help`)", add_help=False)
    b = sub.add_parser("bench", help="benchmark recall / QPS / latency / build / memory against references")
    b.add_argument("--dataset", required=True, help="name (see `vecdb datasets`) or path")
    b.add_argument("--targets", default="vecdb-flat,faiss-flat", help=f"comma list of: {', '.join(sorted(TARGETS))}")
    b.add_argument("--build", default="", help="shared build params, e.g. M=16,ef_construction=200")
    b.add_argument("--search", default="", help="search sweep: 'ef=16,32,64' or 'ef=16,x=1;ef=32,x=2'")
    b.add_argument("--k", type=int, default=10)
    b.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    b.add_argument("--batch", default="1,1000", help="queries per call, e.g. 1,1000")
    b.add_argument("--filter", default="", help="filter selectivities, e.g. 0.01,0.1,0.5")
    b.add_argument("--baseline", default=None,
                   help="comma list of targets the ratios divide by; each row uses the first of its algorithm "
                        "class, exact or ann (default: the first non-vecdb target)")
    b.add_argument("--filter-strategies", default="graph,scan,auto",
                   help="filter strategies timed for graph indexes: graph (filtered traversal), scan (exact scan "
                        "of the allowed rows; references share one), auto (vecdb's rule, applied to every target)")
    b.add_argument("--at-recall", type=float, default=0.95, help="recall@k the summary requires")
    b.add_argument("--max-queries", type=int, default=None)
    b.add_argument("--build-threads", type=int, default=None, help="threads for building (default: max --threads)")
    b.add_argument("--repeats", type=int, default=3, help="timed passes per setting, targets interleaved")
    b.add_argument("--stat", choices=("best", "median"), default="best", help="which pass a row reports")
    b.add_argument("--memory", choices=("fresh", "skip"), default="fresh",
                   help="fresh: also build each target in a fresh process and measure its RSS growth")
    b.add_argument("--allow-busy", action="store_true",
                   help="run even when other processes use > 1/4 of the machine (the result is flagged busy)")
    b.add_argument("--skip-knob-check", action="store_true",
                   help="exploratory runs only: do not fail when a swept knob leaves recall unchanged")
    b.add_argument("--out", default=None, help="result JSON path (default bench/results/...)")
    b.set_defaults(func=_bench, argv=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vecdb`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = ["vecdb", *argv]  # the command line a result records
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except VecdbError as exc:
        print(f"vecdb: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
