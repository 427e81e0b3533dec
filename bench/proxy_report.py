"""The tables bench/proxy_bench.py prints, and the figures of one path they are made from.

Every figure is printed with what it means; issue 4's targets for the sidecar
pair are printed next to the measured values with "met" or "NOT MET", never
asserted.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from typing import Any

MB = 1_000_000
TARGET_ADDED_P50_MS = 0.5
TARGET_ADDED_P99_MS = 1.5
TARGET_SAT_VS_HAPROXY = 0.5
TARGET_RSS_MB = 40.0
NOISY = 15.0
"""% of a core used by other processes above which a run's figures are flagged."""


@dataclass
class PathResult:
    label: str
    proxies: list[str]
    """Names of the path's proxies, first hop first."""
    fixed: dict[str, Any]
    """bench/openloop.py's figures."""
    sat: dict[str, Any]
    """wrk's figures."""
    cpu_fixed: dict[str, float]
    """CPU seconds per process over the fixed-rate run, plus ``client`` (the load
    generator), ``other`` (the rest of the machine) and ``wall``."""
    cpu_sat: dict[str, float]
    memory: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per proxy: rss_idle_kb (before any request), rss_after_kb, hwm_kb (after both runs)."""

    def cpu_ms_per_1k(self, phase: str, name: str | None = None) -> float:
        """CPU ms per 1,000 requests of one proxy, or of all the path's proxies together."""
        cpu = self.cpu_fixed if phase == "fixed" else self.cpu_sat
        total = sum(cpu[n] for n in ([name] if name else self.proxies))
        requests = self.fixed["requests_total"] if phase == "fixed" else self.sat["requests"]
        return float(total * 1e6 / requests) if requests else float("nan")

    def busy(self, phase: str, name: str) -> float:
        """CPU time over wall time, in % of one core."""
        cpu = self.cpu_fixed if phase == "fixed" else self.cpu_sat
        return float(cpu[name] / cpu["wall"] * 100.0)


def combine(rounds: list[PathResult]) -> PathResult:
    """One result from several rounds of a path: the median of every figure, except
    errors (summed) and memory (the highest seen)."""
    if len(rounds) == 1:
        return rounds[0]
    first = rounds[0]
    fixed = _median([r.fixed for r in rounds])
    sat = _median([r.sat for r in rounds])
    fixed["status"] = _summed([r.fixed["status"] for r in rounds])
    fixed["errors"] = _summed([r.fixed["errors"] for r in rounds])
    sat["errors"] = sum(r.sat["errors"] for r in rounds)
    memory = {
        name: {key: max(r.memory[name][key] for r in rounds) for key in first.memory[name]}
        for name in first.memory
    }
    return PathResult(
        first.label,
        first.proxies,
        fixed,
        sat,
        _median([r.cpu_fixed for r in rounds]),
        _median([r.cpu_sat for r in rounds]),
        memory,
    )


def _median(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {k: _median([v[k] for v in values if k in v]) for k in first}
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    return statistics.median(values)


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total


# -- tables -------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _ms(value: float) -> str:
    return f"{value:.3f}"


def _mb(kb: float) -> str:
    return f"{kb * 1024 / MB:.1f}"


def _pct(value: float) -> str:
    return f"{value:.0f}%"


def _failures(fixed: dict[str, Any]) -> int:
    bad = sum(v for k, v in fixed["status"].items() if k != "200")
    return int(bad + sum(fixed["errors"].values()))


def _rounds(args: argparse.Namespace) -> str:
    return f"; median of {args.rounds} rounds" if args.rounds > 1 else ""


def report_fixed(results: list[PathResult], args: argparse.Namespace) -> list[str]:
    direct = results[0]
    base = direct.fixed["latency_ms"]
    rows = []
    for r in results:
        lat = r.fixed["latency_ms"]
        percentiles = [_ms(lat[p]) for p in ("p50", "p90", "p99")]
        added = ["-"] * 3
        if r is not direct:
            added = [f"{lat[p] - base[p]:+.3f}" for p in ("p50", "p90", "p99")]
        rows.append(
            [
                r.label,
                f"{r.fixed['achieved_rps']:.0f}",
                *percentiles,
                *added,
                _ms(r.fixed["from_due_ms"]["p99"]),
                _ms(r.fixed["send_lag_ms"]["p99"]),
                " + ".join(_pct(r.busy("fixed", n)) for n in r.proxies) or "-",
                _pct(r.busy("fixed", "other")),
                str(_failures(r.fixed)),
            ]
        )
    gen = direct.fixed
    return [
        f"\nFIXED RATE: open loop (bench/openloop.py), {args.rate:g} req/s on "
        f"{args.rate_connections} keep-alive connections, {args.rate_duration:g} s measured "
        f"after a 2 s warm-up{_rounds(args)}.",
        "Latency in ms from a request's write to its last byte read; +pNN: added over direct.",
        table(
            [
                *("path", "req/s", "p50", "p90", "p99", "+p50", "+p90", "+p99"),
                *("p99 from due", "send lag p99", "proxies busy", "other", "errors"),
            ],
            rows,
        ),
        "The generator's own cost is the direct row: "
        f"{gen['latency_ms']['p50']:.3f} ms at p50 for a round trip to a C server, its Python "
        f"read and parse included, {direct.busy('fixed', 'client'):.0f}% of a core. It sends "
        f"{gen['send_lag_ms']['p50']:.2f} ms late at p50 (asyncio's timers have 1 ms "
        "resolution); 'p99 from due' counts that lag too; a send lag above direct's means "
        "every connection was busy (the path fell behind).",
    ]


def report_saturation(results: list[PathResult], args: argparse.Namespace) -> list[str]:
    direct, hap = results[0], results[-1]
    rows = []
    for r in results:
        rows.append(
            [
                r.label,
                f"{r.sat['rps']:,.0f}",
                f"{r.sat['rps'] / direct.sat['rps']:.2f}",
                f"{r.sat['rps'] / hap.sat['rps']:.2f}",
                _ms(r.sat["latency_ms"].get("p50", float("nan"))),
                _ms(r.sat["latency_ms"].get("p99", float("nan"))),
                " + ".join(_pct(r.busy("sat", n)) for n in r.proxies) or "-",
                _pct(r.busy("sat", "client")),
                _pct(r.busy("sat", "origin")),
                _pct(r.busy("sat", "other")),
                str(r.sat["errors"]),
            ]
        )
    return [
        f"\nSATURATION: closed loop, wrk -t1 -c{args.sat_connections}, {args.sat_duration:g} s"
        f"{_rounds(args)}; wrk's latency in ms.",
        table(
            [
                *("path", "req/s", "x direct", "x haproxy", "p50", "p99", "proxies busy"),
                *("wrk busy", "origin busy", "other", "errors"),
            ],
            rows,
        ),
        "busy: CPU time / wall time in % of one core ('proxies': first hop + second hop); "
        "other: the rest of the machine's CPU use meanwhile, kernel work on no one's behalf "
        "included (near 0% on a quiet machine).",
    ]


def report_resources(results: list[PathResult], args: argparse.Namespace) -> list[str]:
    rows = []
    for r in results[1:]:
        rows.append(
            [
                r.label,
                "both",
                f"{r.cpu_ms_per_1k('fixed'):.1f}",
                f"{r.cpu_ms_per_1k('sat'):.1f}",
                f"{1e6 / r.cpu_ms_per_1k('sat'):,.0f}",
                "",
                "",
                "",
            ]
        )
        for name in r.proxies:
            mem = r.memory[name]
            rows.append(
                [
                    "",
                    name,
                    f"{r.cpu_ms_per_1k('fixed', name):.1f}",
                    f"{r.cpu_ms_per_1k('sat', name):.1f}",
                    "",
                    _mb(mem["rss_idle_kb"]),
                    _mb(mem["rss_after_kb"]),
                    _mb(mem["hwm_kb"]),
                ]
            )
    return [
        "\nPROXIES: CPU ms per 1,000 requests (utime+stime, /proc/PID/stat); resident memory "
        "in MB (10^6 bytes)",
        table(
            [
                *("path", "proxy", f"CPU @{args.rate:g}/s", "CPU @sat", "req/CPU-s"),
                *("RSS idle", "RSS after", "RSS peak"),
            ],
            rows,
        ),
        "req/CPU-s: requests forwarded per second of the pair's CPU, i.e. its throughput with "
        "one core to itself. RSS idle: before any request; after: VmRSS after both runs; "
        "peak: VmHWM.",
    ]


def report_targets(results: list[PathResult], args: argparse.Namespace) -> list[str]:
    direct, side, hap = results

    def added(r: PathResult, p: str) -> float:
        return float(r.fixed["latency_ms"][p] - direct.fixed["latency_ms"][p])

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    vs_hap = side.sat["rps"] / hap.sat["rps"]
    hap_rss = max(hap.memory[n]["rss_after_kb"] for n in hap.proxies)
    rows = []
    for p, target in (("p50", TARGET_ADDED_P50_MS), ("p99", TARGET_ADDED_P99_MS)):
        rows.append(
            [
                f"added {p} at {args.rate:g} req/s",
                f"<= {target} ms",
                f"{added(side, p):.3f} ms",
                f"{added(hap, p):.3f} ms",
                verdict(added(side, p) <= target),
            ]
        )
    rows.append(
        [
            "saturation, x haproxy pair",
            f">= {TARGET_SAT_VS_HAPROXY}",
            f"{vs_hap:.2f}",
            "1.00",
            verdict(vs_hap >= TARGET_SAT_VS_HAPROXY),
        ]
    )
    for name in side.proxies:
        rss = side.memory[name]["rss_after_kb"] * 1024 / MB
        rows.append(
            [
                f"resident memory, {name}",
                f"< {TARGET_RSS_MB:g} MB",
                f"{rss:.1f} MB",
                f"{_mb(hap_rss)} MB",
                verdict(rss < TARGET_RSS_MB),
            ]
        )
    out = [
        "\nTARGETS (issue 4) for the sidecar pair",
        table(["target", "wanted", "sidecar pair", "haproxy pair", "verdict"], rows),
    ]
    noisy = [
        f"{r.label} ({phase}: {r.busy(phase, 'other'):.0f}%)"
        for r in results
        for phase in ("fixed", "sat")
        if r.busy(phase, "other") > NOISY
    ]
    if noisy:
        out.append(
            "WARNING: other processes used more than "
            f"{NOISY:.0f}% of a core during {', '.join(noisy)}: "
            "those figures are disturbed; run again on a quiet machine (or with --rounds 3)."
        )
    return out


def report_mtls(
    direct: PathResult, plain: PathResult, mtls: PathResult, args: argparse.Namespace
) -> list[str]:
    """What mTLS between the two sidecars adds over the same pair in plaintext."""
    base = direct.fixed["latency_ms"]
    rows = []
    for r in (plain, mtls):
        lat = r.fixed["latency_ms"]
        rows.append(
            [
                r.label,
                *(f"{lat[p] - base[p]:+.3f}" for p in ("p50", "p90", "p99")),
                f"{r.cpu_ms_per_1k('fixed'):.1f}",
                f"{r.sat['rps']:,.0f}",
                str(_failures(r.fixed)),
            ]
        )
    plain_lat, mtls_lat = plain.fixed["latency_ms"], mtls.fixed["latency_ms"]
    rows.append(
        [
            "mTLS adds",
            *(f"{mtls_lat[p] - plain_lat[p]:+.3f}" for p in ("p50", "p90", "p99")),
            f"{mtls.cpu_ms_per_1k('fixed') - plain.cpu_ms_per_1k('fixed'):+.1f}",
            f"x {mtls.sat['rps'] / plain.sat['rps']:.2f}",
            "",
        ]
    )
    return [
        f"\nMTLS (issue 7): the sidecar pair with and without mTLS between its sidecars, at "
        f"{args.rate:g} req/s{_rounds(args)}; +pNN in ms over direct.",
        table(["path", "+p50", "+p90", "+p99", "CPU ms/1k", "saturation req/s", "errors"], rows),
    ]
