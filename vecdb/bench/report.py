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
