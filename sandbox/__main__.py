"""``python -m fashionai_pipeline.sandbox``: run the Fashion.AI sandbox in the foreground.

Every :class:`~sandbox.config.SandboxConfig` knob has a flag; the bound port is
announced on stdout as ``sandbox listening on http://HOST:PORT``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from fashionai_pipeline.sandbox.config import ConfigError, SandboxConfig
from fashionai_pipeline.sandbox.runner import run_sandbox


def _parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    p = argparse.ArgumentParser(
        prog="python -m fashionai_pipeline.sandbox",
        description="Fashion.AI-compatible sandbox: the recommendation endpoint, "
        "a strict contract check, deterministic rankings and failure injection.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one")
    p.add_argument("--token", default=defaults.token, help="accepted X-FashionAI-APP-Token")
    p.add_argument(
        "--latency-ms",
        type=float,
        default=defaults.latency_ms,
        help="sleep added to every accepted request",
    )
    p.add_argument(
        "--latency-jitter-ms",
        type=float,
        default=defaults.latency_jitter_ms,
        help="extra uniform random sleep in [0, jitter]",
    )
    p.add_argument(
        "--rate-429",
        type=float,
        default=defaults.rate_429,
        help="probability 0..1 of an injected 429 with Retry-After",
    )
    p.add_argument(
        "--retry-after",
        type=int,
        default=defaults.retry_after,
        help="Retry-After seconds sent with an injected 429",
    )
    p.add_argument(
        "--retry-after-http-date",
        action="store_true",
        help="send Retry-After as an HTTP-date instead of seconds",
    )
    p.add_argument(
        "--rate-5xx",
        type=float,
        default=defaults.rate_5xx,
        help="probability 0..1 of an injected 500/502/503",
    )
    p.add_argument(
        "--rate-timeout",
        type=float,
        default=defaults.rate_timeout,
        help="probability 0..1 of sleeping --timeout-sleep-s, then 504",
    )
    p.add_argument(
        "--timeout-sleep-s",
        type=float,
        default=defaults.timeout_sleep_s,
        help="how long an injected timeout sleeps",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for failure injection and jitter (reproducible runs)",
    )
    p.add_argument(
        "--log-limit",
        type=int,
        default=defaults.log_limit,
        help="most requests kept in the /_sandbox/requests log",
    )
    p.add_argument(
        "--refuse-id",
        action="append",
        default=[],
        help="a data.id answered with 400 'unknown to the catalog' (repeatable)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and serve until interrupted; exits 2 on a bad flag value."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = SandboxConfig(
            token=args.token,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            rate_429=args.rate_429,
            retry_after=args.retry_after,
            retry_after_http_date=args.retry_after_http_date,
            rate_5xx=args.rate_5xx,
            rate_timeout=args.rate_timeout,
            timeout_sleep_s=args.timeout_sleep_s,
            seed=args.seed,
            log_limit=args.log_limit,
            refuse_ids=tuple(args.refuse_id),
        )
    except ConfigError as exc:
        parser.error(str(exc))
    run_sandbox(config, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
