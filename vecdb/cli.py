"""The ``vecdb`` command: ``version``, ``serve``, ``bench`` (and ``bench run|report|plot``) and ``datasets``."""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from vecdb.bench.grid import parse_value
from vecdb.errors import InvalidArgumentError, VecdbError


def parse_params(text: str) -> dict[str, Any]:
    """``"M=16,ef_construction=200"`` -> ``{"M": 16, "ef_construction": 200}``."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise InvalidArgumentError(f"expected name=value, got {part!r}")
        key, value = part.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_grid(text: str) -> list[dict[str, Any]]:
    """``"ef=16;ef=32"`` -> ``[{"ef": 16}, {"ef": 32}]``; ``"ef=16,32,64"`` expands one knob."""
    if not text:
        return [{}]
    if ";" not in text and text.count("=") == 1:
        key, values = text.split("=", 1)
        return [{key.strip(): parse_value(v.strip())} for v in values.split(",") if v.strip()]
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
    b = sub.add_parser("bench", help="benchmark recall / QPS / latency / build / memory against references "
                                     "(also `vecdb bench run|report|plot`: JSON lines, tables, Pareto plots)")
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


BENCH_COMMANDS = ("run", "report", "plot")


def _int_list(flag: str, text: str) -> list[int]:
    try:
        return _ints(text)
    except ValueError:
        raise InvalidArgumentError(f"{flag}: expected comma-separated integers, got {text!r}") from None


def _bench_run(args: argparse.Namespace) -> int:
    from vecdb.bench import grid
    from vecdb.bench.cli_run import RunSpec, execute
    from vecdb.bench.workloads import parse_filters

    spec = RunSpec(dataset=args.dataset, targets=_names(args.targets), output=args.output,
                   build=grid.parse_axes(args.build, "--build"), search=grid.parse_axes(args.search, "--search"),
                   k=args.k, threads=_int_list("--threads", args.threads),
                   batches=_int_list("--batch", args.batch), reference=args.reference,
                   repeats=args.repeats, stat=args.stat, max_queries=args.max_queries,
                   build_threads=args.build_threads, allow_busy=args.allow_busy, server=args.target,
                   concurrency=_int_list("--concurrency", args.concurrency), collection=args.collection,
                   server_index=args.server_index, filters=parse_filters(args.filter), tenants=args.tenants,
                   churn=args.churn, churn_rounds=args.churn_rounds, churn_rate=args.churn_rate)
    try:
        lines = execute(spec, argv=args.argv, progress=not args.no_progress and sys.stderr.isatty())
    except KeyboardInterrupt:
        print(f"vecdb: interrupted; the lines measured so far are complete in {args.output}", file=sys.stderr)
        return 130
    print(f"wrote {lines} lines to {args.output}")
    return 0


def _bench_report(args: argparse.Namespace) -> int:
    from vecdb.bench.jsonl import read_lines
    from vecdb.bench.report import RECALL_LEVELS, render_best

    lines = read_lines(args.results)
    levels = tuple(_floats(args.levels)) if args.levels else RECALL_LEVELS
    if args.baseline and args.baseline not in {ln["target"] for ln in lines}:
        raise InvalidArgumentError(f"baseline {args.baseline!r} is not a target of these results: "
                                   f"{sorted({ln['target'] for ln in lines})}")
    print(render_best(lines, args.baseline, markdown=args.markdown, levels=levels))
    return 0


def _bench_plot(args: argparse.Namespace) -> int:
    from vecdb.bench.jsonl import read_lines
    from vecdb.bench.plot import save_plot

    out = save_plot(read_lines(args.results), args.o, threads=args.threads, batch=args.batch, workload=args.workload)
    print(f"saved {out}")
    return 0


def build_bench_parser() -> argparse.ArgumentParser:
    """The parser of ``vecdb bench run|report|plot`` (``vecdb bench --dataset ...`` is the
    original one-record command, kept as is)."""
    from vecdb.bench.adapters import TARGETS

    parser = argparse.ArgumentParser(prog="vecdb bench", description="benchmark runs as JSON lines, reports, plots")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="build x search grid -> one JSON line per measured setting")
    r.add_argument("--dataset", required=True, help="name (see `vecdb datasets`) or path")
    r.add_argument("--targets", default="", help=f"comma list of: {', '.join(sorted(TARGETS))}")
    r.add_argument("--build", default="", help="build grid, one knob per ';': \"M=16,32;ef_construction=200\"")
    r.add_argument("--search", default="", help="search grid, one knob per ';': \"ef=16,32,64\"")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--threads", default="1", type=str, help="thread counts, e.g. 1,2")
    r.add_argument("--batch", default="1", type=str, help="queries per call, e.g. 1,100")
    r.add_argument("--output", required=True, help="JSON lines file (appended; raw arrays go to <stem>.raw/)")
    r.add_argument("--reference", default=None,
                   help="same-run reference target every line names (added to --targets if missing; "
                        "default: the first exact target, else the first target)")
    r.add_argument("--repeats", type=int, default=3, help="timed passes per setting, targets interleaved")
    r.add_argument("--stat", choices=("best", "median"), default="best", help="which pass a line reports")
    r.add_argument("--max-queries", type=int, default=None)
    r.add_argument("--build-threads", type=int, default=None, help="threads for building (default: max --threads)")
    r.add_argument("--allow-busy", action="store_true", help="run on a busy machine (lines are flagged busy)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (none when stderr is not a terminal)")
    r.add_argument("--target", default=None, metavar="grpc://HOST:PORT",
                   help="also measure a running `vecdb serve`: the dataset is loaded into a collection there "
                        "(reused when it already holds it) and searched by --concurrency clients")
    r.add_argument("--concurrency", default="1", help="concurrent clients for --target, e.g. 1,4,16")
    r.add_argument("--collection", default=None, help="collection for --target (default: named from the data's hash)")
    r.add_argument("--server-index", default="hnsw", help="index of a collection --target creates: hnsw or flat")
    r.add_argument("--filter", default="", metavar="S,S,...",
                   help="filtered search at these selectivities, e.g. 0.01,0.1,0.5 (a synthetic attribute, fixed "
                        "seed; exact truth over the passing rows, cached)")
    r.add_argument("--tenants", default=None, metavar="dataset|zipf:N",
                   help="each query searches one tenant: the dataset's labels, or N synthetic Zipf tenants")
    r.add_argument("--churn", type=float, nargs="?", const=0.2, default=None, metavar="FRACTION",
                   help="churn workload: build on all but FRACTION (default 0.2) of the rows, then search while a "
                        "writer thread inserts held-out rows and deletes live ones (recall vs the rows live at "
                        "each query's start)")
    r.add_argument("--churn-rounds", type=int, default=4,
                   help="rounds per pass over the held-out rows (a write batch is FRACTION * n / ROUNDS rows)")
    r.add_argument("--churn-rate", type=float, default=None, metavar="ROWS_PER_S",
                   help="most rows per second the churn writer applies (default: as fast as the target takes them)")
    r.set_defaults(func=_bench_run)
    rep = sub.add_parser("report", help="best QPS at recall >= 0.90/0.95/0.99 per target, with ratios")
    rep.add_argument("results", nargs="+", help="JSON lines files of `vecdb bench run`")
    rep.add_argument("--baseline", default=None, help="target the ratios divide by (default: the runs' reference)")
    rep.add_argument("--levels", default="", help="recall levels, e.g. 0.9,0.95,0.99")
    rep.add_argument("--markdown", action="store_true", help="Markdown tables instead of terminal text")
    rep.set_defaults(func=_bench_report)
    pl = sub.add_parser("plot", help="recall-vs-QPS Pareto curves (log QPS) and recall-vs-memory, as PNG")
    pl.add_argument("results", nargs="+", help="JSON lines files of `vecdb bench run`")
    pl.add_argument("-o", required=True, help="output PNG path")
    pl.add_argument("--threads", type=int, default=None, help="lines of this thread count (default: smallest)")
    pl.add_argument("--batch", type=int, default=None, help="lines of this batch size (default: smallest)")
    pl.add_argument("--workload", default=None,
                    help="lines of this workload, e.g. 'filter 0.1' (default: knn when present, else the first)")
    pl.set_defaults(func=_bench_plot)
    return parser


def _bench_subcommand(argv: list[str]) -> bool:
    """True for ``vecdb [-v] bench run|report|plot ...``."""
    i = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    return i is not None and argv[i] == "bench" and argv[i + 1 : i + 2] != [] and argv[i + 1] in BENCH_COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vecdb`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    if _bench_subcommand(argv):
        i = argv.index("bench")
        args = build_bench_parser().parse_args([*argv[:i], *argv[i + 1 :]])
    else:
        args = build_parser().parse_args(argv)
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
