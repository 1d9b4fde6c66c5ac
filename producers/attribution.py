"""Where a page's order came from, and the counts of it: `Served`, `ReadStats`, the metric definitions.

Every read on the storefront side (`RankingReader.serve`, publish-and-wait, the framework
helpers, the HTTP service) answers a `Served`, whose `source` says what ordered the page:

- "fresh": the ranking of this very event, or a newer one for the key (publish-and-wait);
- "cached": an older ranking for the key, `age_ms` old;
- "crowd": no ranking for this shopper yet, so what Fashion.AI ranked for the same page for
  other shoppers recently (optional, off by default; worker/crowd.py builds it);
- "native": no ranking, or an empty one (Fashion.AI lacks data yet): the page's own order;
- "fallback": the cache failed (down, too slow, circuit open, a value that is not a
  ranking): the page's own order;
- "holdout": the session is in the configured holdout: the page's own order on purpose.

`ReadStats` keeps in-process counts of sources, read outcomes and what the local checks
removed; `RankingReader.stats` is one, readable by the application at any time
(`snapshot()`), and `prometheus_text` writes them in Prometheus' text format (the HTTP
service's `/metrics`). The metric names, types and help texts live in `METRICS`, here only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

Source = Literal["fresh", "cached", "crowd", "native", "fallback", "holdout"]
SOURCES: Final[tuple[Source, ...]] = get_args(Source)

#: What one cache read did. "hit": a ranking with products; "empty": a ranking without
#: ("not enough data yet"); "miss": none cached; "invalid": a value that is not a ranking;
#: "timeout": no answer within the bound; "unavailable": refused, down or an error reply;
#: "short_circuit": not tried, the circuit breaker is open.
ReadOutcome = Literal["hit", "empty", "miss", "invalid", "timeout", "unavailable", "short_circuit"]
READ_OUTCOMES: Final[tuple[ReadOutcome, ...]] = get_args(ReadOutcome)

#: What one call of a stock check or facts source did ("failed": it raised or its Redis did
#: not answer, so nothing was removed for it; "short_circuit": its Redis's breaker is open).
CheckOutcome = Literal["ok", "failed", "short_circuit"]
CHECK_OUTCOMES: Final[tuple[CheckOutcome, ...]] = get_args(CheckOutcome)

Removal = Literal["stock", "settings"]
Check = Literal["stock", "facts"]
Store = Literal["cache", "storefront"]


@dataclass(frozen=True, slots=True)
class Served:
    """What a page renders, and where its order came from.

    `source`: see the module docstring. `age_ms`: how old the ranking used is (since
    its event was enqueued; for "crowd", since the crowd ranking was last updated), for
    fresh/cached/crowd; else None. `message_id`: the published event's id
    (publish-and-wait), None when nothing was published.
    """

    products: list[str]
    source: Source
    age_ms: int | None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Literal["counter", "gauge"]
    help: str
    label: str | None = None


METRICS: Final[Mapping[str, Metric]] = {
    "served": Metric(
        "fashionai_reader_served_total", "counter", "Pages ordered, by the source of their order.", "source"
    ),
    "reads": Metric("fashionai_reader_reads_total", "counter", "Ranking cache reads, by outcome.", "outcome"),
    "checks": Metric(
        "fashionai_reader_checks_total",
        "counter",
        "Calls of the stock check and the product facts source, by check and outcome.",
        "check_outcome",
    ),
    "removed": Metric(
        "fashionai_reader_removed_total",
        "counter",
        "Products left off pages by the local stock check or the local settings filters.",
        "reason",
    ),
    "facts_missing": Metric(
        "fashionai_reader_facts_missing_total",
        "counter",
        "Ranked products without facts: kept, not checked against the settings.",
    ),
    "breaker_trips": Metric(
        "fashionai_reader_breaker_trips_total", "counter", "Circuit breaker openings, by Redis.", "store"
    ),
    "breaker_open": Metric(
        "fashionai_reader_breaker_open", "gauge", "1 while the circuit breaker is open, by Redis.", "store"
    ),
}


class ReadStats:
    """In-process counters of one reader. Thread-safe; cheap (one uncontended lock per count).

    Counts start at zero when the reader is built; a forked child starts from its
    parent's counts at the fork (a child's own are its own afterwards).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.served: dict[str, int] = dict.fromkeys(SOURCES, 0)
        self.reads: dict[str, int] = dict.fromkeys(READ_OUTCOMES, 0)
        self.checks: dict[str, int] = {f"{c}:{o}": 0 for c in ("stock", "facts") for o in CHECK_OUTCOMES}
        self.removed: dict[str, int] = {"stock": 0, "settings": 0}
        self.facts_missing = 0
        self.breaker_trips: dict[str, int] = {"cache": 0, "storefront": 0}
        self.breaker_open: dict[str, int] = {"cache": 0, "storefront": 0}

    def count_served(self, source: Source) -> None:
        with self._lock:
            self.served[source] += 1

    def count_read(self, outcome: ReadOutcome) -> None:
        with self._lock:
            self.reads[outcome] += 1

    def count_check(self, check: Check, outcome: CheckOutcome) -> None:
        with self._lock:
            self.checks[f"{check}:{outcome}"] += 1

    def count_removed(self, reason: Removal, n: int) -> None:
        if n:
            with self._lock:
                self.removed[reason] += n

    def count_facts_missing(self, n: int) -> None:
        if n:
            with self._lock:
                self.facts_missing += n

    def breaker_changed(self, store: Store, is_open: bool) -> None:
        """A breaker's state change (its listener): trips counted, the gauge kept."""
        with self._lock:
            if is_open and not self.breaker_open[store]:
                self.breaker_trips[store] += 1
            self.breaker_open[store] = int(is_open)

    def snapshot(self) -> dict[str, Any]:
        """A copy of every count, as plain dicts (JSON-ready)."""
        with self._lock:
            return {
                "served": dict(self.served),
                "reads": dict(self.reads),
                "checks": dict(self.checks),
                "removed": dict(self.removed),
                "facts_missing": self.facts_missing,
                "breaker_trips": dict(self.breaker_trips),
                "breaker_open": dict(self.breaker_open),
            }


def prometheus_text(stats: ReadStats, *, labels: Mapping[str, str] | None = None) -> str:
    """`stats` in Prometheus' text exposition format (0.0.4), every metric of `METRICS`.

    `labels`: constant labels added to every sample (e.g. the tenant). Pure but for the
    snapshot it takes.
    """
    snap = stats.snapshot()
    const = "".join(f',{k}="{_escape(v)}"' for k, v in (labels or {}).items())
    lines: list[str] = []
    for field, metric in METRICS.items():
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        value = snap[field]
        if metric.label is None:
            lines.append(f"{metric.name}{{{const[1:]}}} {value}" if const else f"{metric.name} {value}")
            continue
        assert isinstance(value, dict)
        for key, n in value.items():
            if metric.label == "check_outcome":
                check, outcome = key.split(":")
                tags = f'check="{check}",outcome="{outcome}"'
            else:
                tags = f'{metric.label}="{key}"'
            lines.append(f"{metric.name}{{{tags}{const}}} {n}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
