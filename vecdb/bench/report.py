"""Text tables of a benchmark record: provenance, builds (time, memory), every run, the
at-recall summary with ratios, what each filter strategy runs, and the run's warnings."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate


def _fmt(v: Any, digits: int = 3) -> Any:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"
    return v


def _mib(v: Any) -> Any:
    return "-" if v is None else f"{v / 2**20:.1f}"


def _strategy(row: dict[str, Any]) -> str:
    """"-" unfiltered; "graph" / "scan"; "auto→scan" when auto resolved to a scan."""
    if row["strategy"] is None:
        return "-"
    if row["strategy"] == "auto" and row.get("strategy_used"):
        return f"auto→{row['strategy_used']}"
    return row["strategy"]


def header(record: dict[str, Any]) -> str:
    """Which code, machine and command made the record."""
    prov = record["provenance"]
    v = prov["versions"]
    libs = ", ".join(f"{name} {ver}" for name, ver in v.items() if ver)
    m = prov["machine"]
    dirty = "dirty tree" if prov["dirty"] else "clean tree" if prov["dirty"] is not None else "no git"
    return (f"commit {prov['commit'] or '?'} ({dirty}) · {prov['when']}\n"
            f"machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB · "
            f"load average at start {', '.join(f'{x:.2f}' for x in prov['load_average'])}\n"
            f"libraries: {libs}\ncommand: {prov['command']}")


def warnings(record: dict[str, Any]) -> list[str]:
    out = []
    busy = record["busy"]
    if busy["flagged"]:
        out.append(f"WARNING: BUSY MACHINE: other processes used more than a quarter of the CPUs during "
                   f"{busy['busy_settings']} of {busy['settings']} settings (rows marked '!')"
                   + (" and at the start" if record["start_check"]["busy"] else "") + "; figures are not comparable.")
    if not record["knob_check"]["ok"]:
        for d in record["knob_check"]["dead"]:
            out.append(f"INVALID: {d['target']}: knob {d['knob']} swept over {d['values']} left recall@{d['k']} "
                       f"at {d['recalls']}")
    return out


def render(record: dict[str, Any]) -> str:
    """All tables of one run as text."""
    cfg = record["meta"]["config"]
    k = cfg["k"]
    stat = f"{cfg['stat']} of {cfg['repeats']}"
    out = [f"# {record['meta']['dataset']} · k={k} · baselines={','.join(cfg['baselines']) or '-'}", header(record)]
    builds = []
    for b in record["builds"]:
        fresh = b.get("fresh_process") or {}
        builds.append([b["target"], b["algorithm"], _fmt(b["build_s"], 2), b["build_threads"], _mib(b["memory_bytes"]),
                       b["memory_source"], _mib(fresh.get("rss_growth_bytes")), _mib(fresh.get("peak_growth_bytes")),
                       _mib(b.get("disk_bytes")), "!" if b["busy"] else ""])
    out.append(tabulate(builds, headers=["target", "class", "build s", "threads", "counted MiB", "count from",
                                         "RSS growth MiB", "peak growth MiB", "disk MiB", "busy"], tablefmt="github"))
    runs = [[r["label"], r["threads"], r["batch"], _fmt(r["selectivity"]), _strategy(r), _fmt(r["recall_at_1"]),
             _fmt(r[f"recall_at_{k}"]), _fmt(r["qps"], 1), _fmt(r["p50_ms"]), _fmt(r["p99_ms"]),
             _fmt(r["others_share"], 2), "!" if r["busy"] else ""]
            for r in record["runs"]]
    out.append(tabulate(runs, headers=["target", "threads", "batch", "filter", "strategy", "R@1", f"R@{k}",
                                       f"QPS ({stat})", "p50 ms", "p99 ms", "others", "busy"], tablefmt="github"))
    summ = [[s["target"], s["threads"], s["batch"], _fmt(s["selectivity"]), _strategy(s), s["algorithm"],
             s["label"] or "(not reached)", _fmt(s["qps"], 1), s["baseline"] or "-", _fmt(s["ratio_vs_baseline"], 2)]
            for s in record["summary"]]
    out.append(f"Best QPS ({stat} passes) at recall@{k} >= {cfg['at_recall']}; ×baseline = this QPS ÷ the "
               "baseline's, same class, threads, batch, filter and strategy:")
    out.append(tabulate(summ, headers=["target", "threads", "batch", "filter", "strategy", "class", "setting", "QPS",
                                       "baseline", "×baseline"], tablefmt="github"))
    if any(r["strategy"] for r in record["runs"]):
        legend = [f"  {t} / {s}: {path}" for t, paths in record["filter_paths"].items() for s, path in paths.items()]
        out.append("Filter strategies (what each filtered row runs):\n" + "\n".join(legend))
    out.append("Memory: 'counted' is the library's own count (or a formula from its layout where it has none); "
               "'RSS growth' and 'peak growth' come from building in a fresh process (VmRSS after - before; "
               "VmHWM - VmRSS before).")
    out.extend(warnings(record))
    return "\n\n".join(out)


# ---- `vecdb bench report`: result lines of `vecdb bench run` ------------------------------------
#: recall@k levels the report reads best QPS at (the ann-benchmarks Pareto reading)
RECALL_LEVELS = (0.90, 0.95, 0.99)


def workload_label(line: dict[str, Any]) -> str:
    """The workload a line measured ("knn" for plain k-NN and for lines written before workloads)."""
    return line.get("workload", {}).get("label", "knn")


def _dataset_key(line: dict[str, Any]) -> tuple:
    d = line["dataset"]
    return d["name"], d["n_base"], d["queries_sha256"][:12], line["k"], workload_label(line)


def best_at_recall(lines: list[dict[str, Any]], levels: tuple[float, ...] = RECALL_LEVELS) -> list[dict[str, Any]]:
    """Per (dataset, k, target, threads, batch): the line with the best QPS among those whose
    recall@k reaches each level (None where no setting reaches it)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for line in lines:
        groups.setdefault((_dataset_key(line), line["target"], line["threads"], line["batch"]), []).append(line)
    rows = []
    for (dkey, target, threads, batch), members in groups.items():
        key_recall = f"recall_at_{dkey[3]}"
        best: dict[float, dict[str, Any] | None] = {}
        for level in levels:
            ok = [m for m in members if m[key_recall] + 1e-9 >= level]
            best[level] = max(ok, key=lambda m: m["qps"]) if ok else None
        rows.append({"dataset": dkey, "target": target, "threads": threads, "batch": batch, "best": best,
                     "max_recall": max(m[key_recall] for m in members),
                     # a server's own CPU counts as "others" (its pid is not ours to see): not judged
                     "busy": None if any(m.get("others_include_server") for m in members)
                     else any(m.get("busy") for m in best.values() if m)})
    rows.sort(key=lambda r: (r["dataset"], r["threads"], r["batch"], r["target"]))
    return rows


def add_ratios(rows: list[dict[str, Any]], baseline: str | None) -> None:
    """Set ``ratio[level]`` = this best QPS / the baseline's, same dataset, k, threads, batch."""
    index = {(r["dataset"], r["target"], r["threads"], r["batch"]): r for r in rows}
    for r in rows:
        base = index.get((r["dataset"], baseline, r["threads"], r["batch"])) if baseline else None
        r["ratio"] = {}
        for level, line in r["best"].items():
            ref = None if base is None else base["best"][level]
            r["ratio"][level] = line["qps"] / ref["qps"] if line and ref and ref["qps"] else None


def render_best(lines: list[dict[str, Any]], baseline: str | None = None, markdown: bool = False,
                levels: tuple[float, ...] = RECALL_LEVELS) -> str:
    """The best-QPS-at-recall table per dataset, as terminal text or Markdown."""
    if not lines:
        return "no result lines"
    baseline = baseline or lines[0].get("reference")
    rows = best_at_recall(lines, levels)
    add_ratios(rows, baseline)
    fmt = "github" if markdown else "simple"
    out = []
    for dkey in dict.fromkeys(r["dataset"] for r in rows):
        name, n_base, qhash, k, workload = dkey
        table = []
        for r in (r for r in rows if r["dataset"] == dkey):
            cells: list[Any] = [r["target"], r["threads"], r["batch"]]
            for level in levels:
                line = r["best"][level]
                cells += ["-", "(not reached)", "-"] if line is None else [
                    _qps(line["qps"]), _setting(line), _fmt(r["ratio"][level], 2)]
            cells += [_fmt(r["max_recall"]), "n/a" if r["busy"] is None else "!" if r["busy"] else ""]
            table.append(cells)
        headers = ["target", "threads", "batch"]
        for level in levels:
            headers += [f"QPS @R{k}≥{level:.2f}", "setting", f"×{baseline or 'baseline'}"]
        headers += [f"max R@{k}", "busy"]
        shown = "" if workload == "knn" else f", {workload}"
        title = (f"{name} ({n_base} base rows, queries {qhash}{shown}) · best QPS at recall@{k} ≥ "
                 f"{', '.join(f'{lv:.2f}' for lv in levels)} · ×{baseline} = QPS ÷ {baseline}'s at the same "
                 "threads and batch")
        out.append(("### " if markdown else "") + title + "\n\n" + tabulate(table, headers=headers, tablefmt=fmt))
    churn = render_churn(lines, markdown)
    if churn:
        out.append(churn)
    if any(r["busy"] for r in rows):
        out.append("! = a line shown was measured while other processes used more than a quarter of the "
                   "machine; its figures are not comparable.")
    if any(r["busy"] is None for r in rows):
        out.append("busy n/a: server rows, whose server process counts among the 'other processes'.")
    return "\n\n".join(out)


def _qps(v: float) -> str:
    """QPS as text: whole numbers with thousands separators from 100 up, else one decimal."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _setting(line: dict[str, Any]) -> str:
    """``M=16 ef=64``: the build and search knobs of a line."""
    knobs = {**line.get("build", {}), **line.get("search", {})}
    return " ".join(f"{k}={v}" for k, v in knobs.items()) or "-"


def churn_table(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per churn line: recall@k, QPS, p50 and p99 while the writer ran beside the same figures
    idle (the same setting just before), with what the writer achieved."""
    rows = []
    for ln in lines:
        w = ln.get("workload", {})
        if w.get("kind") != "churn" or "idle" not in w:
            continue
        k, idle, ch = ln["k"], w["idle"], w["churn"]
        rows.append({"dataset": _dataset_key(ln), "target": ln["target"], "threads": ln["threads"],
                     "batch": ln["batch"], "setting": _setting(ln), "mode": ch["write_mode"],
                     "write_rows_per_s": ch["write_rows_per_s"], "rounds": ch["rounds"],
                     "n_live": (ch["n_live_min"], ch["n_live_max"]),
                     "recall": ln[f"recall_at_{k}"], "recall_idle": idle[f"recall_at_{k}"],
                     "qps": ln["qps"], "qps_idle": idle["qps"], "p50_ms": ln["p50_ms"], "p50_idle_ms": idle["p50_ms"],
                     "p99_ms": ln["p99_ms"], "p99_idle_ms": idle["p99_ms"],
                     "in_flight": ch["queries_with_writes_in_flight"], "queries": ch["queries_searched"]})
    rows.sort(key=lambda r: (r["dataset"], r["threads"], r["batch"], r["target"], r["setting"]))
    return rows


def render_churn(lines: list[dict[str, Any]], markdown: bool = False) -> str:
    """The churn table per dataset and workload (empty text when no line is a churn line)."""
    rows = churn_table(lines)
    out = []
    for dkey in dict.fromkeys(r["dataset"] for r in rows):
        name, n_base, qhash, k, workload = dkey
        table = [[r["target"], r["threads"], r["batch"], r["setting"], r["mode"], _fmt(r["write_rows_per_s"], 0),
                  r["rounds"], f"{r['n_live'][0]}-{r['n_live'][1]}", _fmt(r["recall"]), _fmt(r["recall_idle"]),
                  _qps(r["qps"]), _qps(r["qps_idle"]), _fmt(r["p50_ms"]), _fmt(r["p50_idle_ms"]), _fmt(r["p99_ms"]),
                  _fmt(r["p99_idle_ms"]), f"{r['in_flight']}/{r['queries']}"]
                 for r in rows if r["dataset"] == dkey]
        headers = ["target", "threads", "batch", "setting", "writes", "rows/s written", "rounds", "n_live",
                   f"R@{k} churn", f"R@{k} idle", "QPS churn", "QPS idle", "p50 ms churn", "p50 ms idle",
                   "p99 ms churn", "p99 ms idle", "queries with writes in flight"]
        title = (f"{name} ({n_base} base rows, queries {qhash}, {workload}) · searched while a writer inserts and "
                 "deletes (churn) vs the same setting just before (idle); recall per the lines' truth_rule")
        out.append(("### " if markdown else "") + title + "\n\n" +
                   tabulate(table, headers=headers, tablefmt="github" if markdown else "simple"))
    return "\n\n".join(out)
