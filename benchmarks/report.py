"""Turning a run's results into targets, a table for people, and one JSON object."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from benchmarks.context import UPSTREAM_LATENCY_MS

Results = dict[str, Any]


def _get(results: Results, *path: str | int) -> Any:
    node: Any = results
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def derive(results: Results) -> None:
    """Add the ratios (project vs best peer, vs ceiling, CPU) to `results`."""
    delivery = results.get("delivery", {})
    peers = {k: v["median"] for k, v in delivery.items() if k.startswith("celery")}
    project = _get(results, "delivery", "project", "median")
    ceiling = next((v["median"] for k, v in delivery.items() if k.startswith("ceiling")), None)
    best = max(peers, key=lambda k: peers[k]["events_per_s"]) if peers else None
    ratios: dict[str, Any] = {"best_peer": best}
    if project and best:
        ratios["project_vs_best_peer"] = project["events_per_s"] / peers[best]["events_per_s"]
        ratios["cpu_best_peer_vs_project"] = peers[best]["cpu_us_per_event"] / project["cpu_us_per_event"]
    if project and ceiling:
        ratios["project_vs_ceiling"] = project["events_per_s"] / ceiling["events_per_s"]
    celery = _get(results, "publish", "celery", "p50_us")
    mine = _get(results, "publish", "project", "p50_us")
    if celery and mine:
        ratios["apply_async_vs_publish_p50"] = celery / mine
    celery_cpu = _get(results, "publish", "celery", "cpu_us_per_call")
    mine_cpu = _get(results, "publish", "project", "cpu_us_per_call")
    if celery_cpu and mine_cpu:
        ratios["apply_async_vs_publish_cpu"] = celery_cpu / mine_cpu
    results["ratios"] = ratios


def targets(results: Results) -> list[dict[str, Any]]:
    r = results
    rows: list[tuple[str, str, Any, Callable[[float], bool]]] = [
        (
            "delivery through one worker node",
            ">= 2,000 events/s",
            _get(r, "delivery", "project", "median", "events_per_s"),
            lambda v: v >= 2000,
        ),
        ("delivery vs best peer", ">= 6x", _get(r, "ratios", "project_vs_best_peer"), lambda v: v >= 6),
        ("delivery vs ceiling", ">= 0.6x", _get(r, "ratios", "project_vs_ceiling"), lambda v: v >= 0.6),
        (
            "worker CPU per event vs best peer",
            ">= 5x less",
            _get(r, "ratios", "cpu_best_peer_vs_project"),
            lambda v: v >= 5,
        ),
        ("publish p50", "<= 100 us", _get(r, "publish", "project", "p50_us"), lambda v: v <= 100),
        ("publish p99", "<= 1,000 us", _get(r, "publish", "project", "p99_us"), lambda v: v <= 1000),
        (
            "publish vs apply_async (p50)",
            ">= 8x cheaper",
            _get(r, "ratios", "apply_async_vs_publish_p50"),
            lambda v: v >= 8,
        ),
        ("read p50 (200-product merge)", "<= 100 us", _get(r, "read", "p50_us"), lambda v: v <= 100),
        ("read p99 (200-product merge)", "<= 1,000 us", _get(r, "read", "p99_us"), lambda v: v <= 1000),
        (
            "enqueue->cache p99 at half load",
            f"<= {UPSTREAM_LATENCY_MS + 100} ms",
            _get(r, "latency", "p99_ms"),
            lambda v: v <= UPSTREAM_LATENCY_MS + 100,
        ),
        (
            "worker peak RSS per process, big backlog",
            "<= 150 MB",
            _get(r, "memory", "max_process_mb"),
            lambda v: v <= 150,
        ),
        (
            "worker node (all processes, PSS), big backlog",
            "<= 150 MB",
            _get(r, "memory", "node_pss_mb"),
            lambda v: v <= 150,
        ),
    ]
    for run in r.get("rate_limit", []):
        rows.append(
            (f"rate-limited rate, {run['workers']} worker(s)", ">= 0.95 R", run["ratio"], lambda v: v >= 0.95)
        )
    out = []
    for name, goal, value, ok in rows:
        known = isinstance(value, int | float) and not math.isnan(value)
        out.append(
            {
                "target": name,
                "goal": goal,
                "value": value if known else None,
                "pass": bool(known and ok(value)),
            }
        )
    return out


def _n(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _delivery(results: Results, add: Callable[[str], None]) -> None:
    add(
        f"{'delivery (median of runs)':<34}{'backlog':>9}{'runs':>6}{'events/s':>11}"
        f"{'CPU us/event':>14}{'procs':>7}  all runs (events/s)"
    )
    for label, entry in results.get("delivery", {}).items():
        d = entry["median"]
        cpu = _n(d["cpu_us_per_event"]) + (" *" if label.startswith("ceiling") else "")
        runs = ", ".join(_n(x["events_per_s"]) for x in entry["runs"])
        add(
            f"  {label:<32}{d['backlog']:>9,}{len(entry['runs']):>6}{_n(d['events_per_s']):>11}"
            f"{cpu:>14}{d['processes']:>7}  {runs}"
        )
    ratios = results.get("ratios", {})
    add(
        f"  project / best peer ({ratios.get('best_peer')}): "
        f"{_n(ratios.get('project_vs_best_peer'), 2)}x; "
        f"project / ceiling: {_n(ratios.get('project_vs_ceiling'), 2)}x; "
        f"best peer CPU / project CPU per event: {_n(ratios.get('cpu_best_peer_vs_project'), 2)}x"
    )
    add("  * the ceiling's CPU is its client process'; the others' is all their worker processes'")


def _request_path(results: Results, add: Callable[[str], None]) -> None:
    add(f"{'request path (per call)':<60}{'calls':>8}{'p50 us':>9}{'p99 us':>9}{'mean us':>9}{'CPU us':>8}")
    rows = [
        ("floor:", results.get("redis_rtt")),
        ("floor:", results.get("redis_rtt_polled")),
        ("floor:", results.get("redis_rtt_client")),
        ("publish:", _get(results, "publish", "project")),
        ("publish:", _get(results, "publish", "project_unconfirmed")),
        ("publish:", _get(results, "publish", "project_polled")),
        ("publish:", _get(results, "publish", "celery")),
        ("read:", results.get("read")),
        ("read:", results.get("read_polled")),
    ]
    for kind, t in rows:
        if t:
            what = f"{kind} {t['what']}" + (" (200 native)" if kind == "read:" else "")
            add(
                f"  {what:<58}{t['calls']:>8,}{_n(t['p50_us']):>9}{_n(t['p99_us']):>9}"
                f"{_n(t['mean_us']):>9}{_n(t.get('cpu_us_per_call')):>8}"
            )
    ratio = _get(results, "ratios", "apply_async_vs_publish_p50")
    cpu = _get(results, "ratios", "apply_async_vs_publish_cpu")
    add(
        f"  apply_async p50 / publish p50: {_n(ratio, 2)}x; CPU per call "
        f"{_n(_get(results, 'publish', 'celery', 'cpu_us_per_call'))} vs "
        f"{_n(_get(results, 'publish', 'project', 'cpu_us_per_call'))} us: {_n(cpu, 2)}x"
    )


def _pressure(results: Results, add: Callable[[str], None]) -> None:
    lat = results.get("latency")
    if lat:
        add(
            f"enqueue->cache at half load: {_n(lat['rate'])}/s for {lat['seconds']:.0f} s, "
            f"one worker -c 2: p50 {_n(lat['p50_ms'])} ms, p99 {_n(lat['p99_ms'])} ms, "
            f"max {_n(lat['max_ms'])} ms ({lat['samples']:,} samples)"
        )
    mem = results.get("memory")
    if mem:
        add(
            f"worker peak RSS (VmHWM), {mem['backlog']:,}-event backlog, after "
            f"{mem['seconds']:.0f} s ({mem['consumed']:,} consumed): max per process "
            f"{_n(mem['max_process_mb'], 1)} MB, total {_n(mem['total_mb'], 1)} MB "
            f"over {len(mem['per_process_mb'])} processes {mem['per_process_mb']}; "
            f"the node's PSS (shared pages counted once) {_n(mem.get('node_pss_mb'), 1)} MB"
        )
    for run in results.get("rate_limit", []):
        add(
            f"rate limit R={run['limit']:.0f}/s, {run['workers']} worker(s) -c 1: "
            f"delivered {_n(run['delivered_per_s'], 1)}/s = {run['ratio']:.3f} R "
            f"over {run['events']:,} events; most in any 1 s: {run['max_in_1s']}"
        )


def table(results: Results) -> str:
    lines: list[str] = []
    add = lines.append
    m = results["machine"]
    add(
        f"fashionai-pipeline benchmarks ({'quick' if m['quick'] else 'full'} run) - "
        f"{m['cpus']} CPUs, load {m['load_start']:.2f} at start / {m['load_end']:.2f} at end, "
        f"sandbox latency {UPSTREAM_LATENCY_MS} ms, broker {m['broker']}"
    )
    add(f"definition: {results['definition']}")
    if str(m["broker"]).startswith("amqp"):
        add(
            "on RabbitMQ: delivery and publish ran there (each backlog published while the ready workers "
            "were paused with SIGSTOP, then released); the Publisher waits for publisher confirms, "
            "apply_async does not; the PING floors, read, latency, memory and rate-limit sections "
            "ran on Redis"
        )
    if max(m["load_start"], m["load_end"]) > 1.0:
        add(
            f"note: load average above 1 on {m['cpus']} CPUs: other work on this machine competed "
            "for CPU, so throughput and latency figures are lower than on an idle machine"
        )
    add(f"run took {m.get('elapsed_s', 0):.0f} s")
    add("")
    _delivery(results, add)
    add("")
    _request_path(results, add)
    add("")
    _pressure(results, add)
    add("")
    add("targets")
    for t in results.get("targets", []):
        value = t["value"]
        shown = "n/a" if value is None else (_n(value, 2) if abs(value) < 100 else _n(value))
        verdict = "PASS" if t["pass"] else "FAIL"
        add(f"  [{verdict}] {t['target']:<42} {t['goal']:<14} measured {shown}")
    passed = sum(t["pass"] for t in results.get("targets", []))
    add(f"  {passed}/{len(results.get('targets', []))} targets met")
    for err in results.get("worker_log_errors", []):
        add(f"  worker log: {err['process']} logged {err['lines']} error line(s), first: {err['first']}")
    for section, error in results.get("errors", {}).items():
        add(f"  ERROR in {section}: {error}")
    return "\n".join(lines)
