"""``python -m fashionai_pipeline.sandbox`` (also ``fashionai-pipeline sandbox``).

With flags only, it serves the sandbox in the foreground: every
:class:`~fashionai_pipeline.sandbox.config.SandboxConfig` knob has a flag, and
the bound port is announced on stdout as ``sandbox listening on http://HOST:PORT``.

Commands talk to a running sandbox's control routes (``--url``, default
``$FASHIONAI_SANDBOX_URL`` or http://127.0.0.1:8080):

- ``settings show [--type T]``, ``settings save --type T [filters]``,
  ``settings clear --type T``: one storefront's recommendation settings
  (``--storefront NAME``, default ``default``);
- ``explain --event-type E --id ID --session S [--user U]``: why a ranking is
  what it is;
- ``openapi``: print the OpenAPI description (no server needed).

Exit status: 0 done, 1 the sandbox refused or could not be reached (the reason
on stderr), 2 a bad flag.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from fashionai_pipeline.producers.recsettings import REC_TYPES
from fashionai_pipeline.sandbox.catalog import CatalogError, load_catalog
from fashionai_pipeline.sandbox.config import ConfigError, SandboxConfig, load_config_file
from fashionai_pipeline.sandbox.contract import EVENT_TYPES

COMMANDS = ("settings", "explain", "openapi")
_DEFAULT_URL = "http://127.0.0.1:8080"


def _serve_parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    p = argparse.ArgumentParser(
        prog="fashionai-pipeline sandbox",
        description="Fashion.AI-compatible sandbox: the recommendation endpoint over a fashion catalog, "
        "a strict contract check, per-storefront settings and CORS, and failure injection. "
        f"Commands (each has --help): {', '.join(COMMANDS)}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one")
    p.add_argument("--token", default=defaults.token, help="the default storefront's X-FashionAI-APP-Token")
    p.add_argument(
        "--authorize-domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="let browsers at DOMAIN (a host, or an origin like https://shop.example:8443) call with "
        "--token (repeatable); without it every browser call is blocked, as upstream",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="JSON file of knobs, e.g. more storefronts: "
        '{"tokens": [{"name": "shop-a", "token": "...", "domains": ["shop-a.example"]}]}; '
        "flags given on the command line win",
    )
    p.add_argument("--catalog", metavar="FILE", help="your own catalog, .jsonl or .csv (docs/SANDBOX.md)")
    p.add_argument("--max-products", type=int, default=defaults.max_products, help="longest list answered")
    for kind, default in (
        ("product-view", defaults.min_history_product_view),
        ("category-view", defaults.min_history_category_view),
        ("shop-the-look", defaults.min_history_shop_the_look),
        ("custom-shelf", defaults.min_history_custom_shelf),
    ):
        p.add_argument(
            f"--min-history-{kind}",
            type=int,
            default=default,
            help=f"signal events a shopper needs before {kind} answers a non-empty list",
        )
    p.add_argument(
        "--rate-limit-rps",
        type=int,
        default=defaults.rate_limit_rps,
        help="hard limit: requests accepted in any second, the rest 429 (0: off)",
    )
    p.add_argument(
        "--latency-ms", type=float, default=defaults.latency_ms, help="sleep added to every answer"
    )
    p.add_argument(
        "--latency-jitter-ms",
        type=float,
        default=defaults.latency_jitter_ms,
        help="extra uniform random sleep in [0, jitter]",
    )
    p.add_argument(
        "--rate-429", type=float, default=defaults.rate_429, help="probability 0..1 of an injected 429"
    )
    p.add_argument(
        "--retry-after", type=int, default=defaults.retry_after, help="Retry-After seconds sent with a 429"
    )
    p.add_argument(
        "--retry-after-http-date", action="store_true", help="send Retry-After as an HTTP-date instead"
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
        "--timeout-sleep-s", type=float, default=defaults.timeout_sleep_s, help="how long a timeout sleeps"
    )
    p.add_argument("--seed", type=int, default=None, help="seed for failure injection and jitter")
    p.add_argument("--log-limit", type=int, default=defaults.log_limit, help="most requests kept in the log")
    p.add_argument(
        "--refuse-id",
        action="append",
        default=[],
        help="a data.id answered with 400 'unknown to the catalog' (repeatable)",
    )
    p.add_argument(
        "--warm", action="store_true", help="compute every product's similar and look lists before serving"
    )
    return p


def _given(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, object]:
    # flag values that differ from the defaults: these win over the config file
    knobs = {
        "token": args.token,
        "latency_ms": args.latency_ms,
        "latency_jitter_ms": args.latency_jitter_ms,
        "rate_429": args.rate_429,
        "retry_after": args.retry_after,
        "retry_after_http_date": args.retry_after_http_date,
        "rate_5xx": args.rate_5xx,
        "rate_timeout": args.rate_timeout,
        "timeout_sleep_s": args.timeout_sleep_s,
        "seed": args.seed,
        "log_limit": args.log_limit,
        "refuse_ids": tuple(args.refuse_id),
        "max_products": args.max_products,
        "min_history_product_view": args.min_history_product_view,
        "min_history_category_view": args.min_history_category_view,
        "min_history_shop_the_look": args.min_history_shop_the_look,
        "min_history_custom_shelf": args.min_history_custom_shelf,
        "rate_limit_rps": args.rate_limit_rps,
    }
    defaults = SandboxConfig()
    return {k: v for k, v in knobs.items() if v != getattr(defaults, k)}


def _serve(argv: Sequence[str]) -> None:
    from fashionai_pipeline.sandbox.ranking import RankingEngine
    from fashionai_pipeline.sandbox.runner import run_sandbox

    parser = _serve_parser()
    args = parser.parse_args(argv)
    try:
        knobs: dict[str, object] = load_config_file(args.config) if args.config else {}
        knobs.update(_given(parser, args))
        if args.authorize_domain:
            earlier = knobs.get("authorized_domains", [])
            knobs["authorized_domains"] = [
                *(earlier if isinstance(earlier, list) else []),
                *args.authorize_domain,
            ]
        config = SandboxConfig()
        config.update(knobs)
        catalog = load_catalog(args.catalog) if args.catalog else None
    except (ConfigError, CatalogError, OSError) as exc:
        parser.error(str(exc))
    engine = RankingEngine(catalog, config=config)
    if args.warm:
        engine.warm()
    run_sandbox(config, host=args.host, port=args.port, engine=engine)


# -- commands against a running sandbox ------------------------------------------------


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("FASHIONAI_SANDBOX_URL", _DEFAULT_URL),
        help="the sandbox's base URL ($FASHIONAI_SANDBOX_URL)",
    )
    p.add_argument("--storefront", default="default", help="the storefront (a name from the config file)")


def _commands_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fashionai-pipeline sandbox", description="sandbox commands")
    sub = p.add_subparsers(dest="command", required=True)
    settings = sub.add_parser("settings", help="read, save or clear a storefront's recommendation settings")
    actions = settings.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="print the settings (one type, or all three)")
    show.add_argument("--type", choices=REC_TYPES)
    _client_args(show)
    save = actions.add_parser(
        "save", help="save one type's settings (the whole type: filters not given are cleared)"
    )
    save.add_argument("--type", choices=REC_TYPES, required=True)
    save.add_argument("--full-size-run", action="store_true", help="prefer products with every size in stock")
    save.add_argument("--discount", choices=("all", "onlyWith", "onlyWithout"), default="all")
    save.add_argument("--price-min", help="custom price range: lowest price in R$ (with --price-max)")
    save.add_argument("--price-max", help="custom price range: highest price in R$ (with --price-min)")
    save.add_argument("--above-10k", action="store_true", help="only products above R$ 10,000.00")
    save.add_argument(
        "--low-stock", type=int, metavar="LIMIT", help="leave out products with LIMIT units or fewer"
    )
    save.add_argument("--json", help="the settings as JSON instead of the flags above")
    _client_args(save)
    clear = actions.add_parser("clear", help="clear one type's settings (no filters)")
    clear.add_argument("--type", choices=REC_TYPES, required=True)
    _client_args(clear)
    explain = sub.add_parser("explain", help="why the sandbox ranks an event as it does (records nothing)")
    explain.add_argument("--event-type", choices=EVENT_TYPES, required=True)
    explain.add_argument("--id", default="", help='data.id ("" for customShelf)')
    explain.add_argument("--session", required=True)
    explain.add_argument("--user")
    _client_args(explain)
    sub.add_parser("openapi", help="print the OpenAPI description of the sandbox")
    return p


def _settings_body(args: argparse.Namespace, parser: argparse.ArgumentParser) -> bytes:
    if args.json is not None:
        return str(args.json).encode()
    body: dict[str, object] = {"fullSizeRun": args.full_size_run, "discount": args.discount}
    if args.above_10k and (args.price_min is not None or args.price_max is not None):
        parser.error("--above-10k and --price-min/--price-max exclude each other")
    if args.above_10k:
        body["priceRange"] = {"mode": "above10k"}
    elif args.price_min is not None or args.price_max is not None:
        body["priceRange"] = {"mode": "custom", "min": args.price_min, "max": args.price_max}
    if args.low_stock is not None:
        body["lowStock"] = {"enabled": True, "limit": args.low_stock}
    return json.dumps(body).encode()


def _call(method: str, url: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - the user's --url
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            print(json.dumps(json.loads(answer.read()), indent=2, ensure_ascii=False))
            return 0
    except urllib.error.HTTPError as refused:
        detail = refused.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        print(f"error: the sandbox answered {refused.code}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        where = url.split("/_sandbox", maxsplit=1)[0]
        print(f"error: no sandbox answers at {where} ({exc}); start one or pass --url", file=sys.stderr)
        return 1


def _command(argv: Sequence[str]) -> int:
    parser = _commands_parser()
    args = parser.parse_args(argv)
    if args.command == "openapi":
        from fashionai_pipeline.sandbox.openapi import openapi

        print(json.dumps(openapi(), indent=2, sort_keys=True))
        return 0
    base = str(args.url).rstrip("/") + "/_sandbox"
    query = "?" + urllib.parse.urlencode({"storefront": args.storefront})
    if args.command == "explain":
        event: dict[str, object] = {
            "sessionId": args.session,
            "eventType": args.event_type,
            "data": {"id": args.id},
        }
        if args.user:
            event["userId"] = args.user
        return _call("POST", f"{base}/explain{query}", json.dumps(event).encode())
    if args.action == "show":
        where = f"{base}/settings/{args.type}" if args.type else f"{base}/settings"
        return _call("GET", where + query)
    if args.action == "save":
        return _call("PUT", f"{base}/settings/{args.type}{query}", _settings_body(args, parser))
    return _call("DELETE", f"{base}/settings/{args.type}{query}")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve (flags only) or run a command; returns the exit status (2: bad flags, via argparse)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        return _command(args)
    _serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
