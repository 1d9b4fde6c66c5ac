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
on stderr), 2 a bad flag: one line on stderr naming the flag (or
``FASHIONAI_SANDBOX_URL``), never a traceback — a port outside 0-65535 or in
use, a host that does not resolve, an unreadable or refused ``--config`` or
``--catalog`` (a refused catalog lists its bad rows, one a line), a ``--url``
that is not an http(s) URL, ``--json`` together with the per-field flags.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import NoReturn

from fashionai_pipeline.producers.recsettings import REC_TYPES
from fashionai_pipeline.sandbox.bodies import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_IDLE_TIMEOUT_S,
    MAX_TIMEOUT_S,
    check_timeout,
)
from fashionai_pipeline.sandbox.catalog import CatalogError, load_catalog
from fashionai_pipeline.sandbox.config import ConfigError, SandboxConfig, load_config_file
from fashionai_pipeline.sandbox.contract import EVENT_TYPES

COMMANDS = ("settings", "explain", "openapi")
_DEFAULT_URL = "http://127.0.0.1:8080"
_URL_ENV = "FASHIONAI_SANDBOX_URL"
_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")  # what http.client refuses in a URL


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message`` (no usage block), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("must be an integer from 0 to 65535 (0 picks a free one)")
    return port


def _timeout(text: str) -> float:
    try:
        return check_timeout("", float(text))
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}"
        ) from None


def _serve_parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    p = _Parser(
        prog="fashionai-pipeline sandbox",
        description="Fashion.AI-compatible sandbox: the recommendation endpoint over a fashion catalog, "
        "a strict contract check, per-storefront settings and CORS, and failure injection. "
        f"Commands (each has --help): {', '.join(COMMANDS)}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=_port, default=8080, help="port to bind; 0 picks a free one")
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
    p.add_argument(
        "--body-timeout-s",
        type=_timeout,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="a request body not fully received within this is answered 408 and the connection closed",
    )
    p.add_argument(
        "--idle-timeout-s",
        type=_timeout,
        default=DEFAULT_IDLE_TIMEOUT_S,
        help="close a connection that sends no complete request head within this of opening or of "
        "its last answer",
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
    knobs: dict[str, object] = {}
    if args.config:
        try:
            knobs = load_config_file(args.config)
        except (ConfigError, OSError) as exc:
            parser.error(f"--config: {_reason(exc)}")
    knobs.update(_given(parser, args))
    if args.authorize_domain:
        earlier = knobs.get("authorized_domains", [])
        knobs["authorized_domains"] = [
            *(earlier if isinstance(earlier, list) else []),
            *args.authorize_domain,
        ]
    config = SandboxConfig()
    try:
        config.update(knobs)
    except ConfigError as exc:  # names the knob: a flag's or the --config file's
        parser.error(str(exc))
    catalog = None
    if args.catalog:
        try:
            catalog = load_catalog(args.catalog)
        except (CatalogError, OSError) as exc:
            parser.error(f"--catalog: {_reason(exc)}")
    engine = RankingEngine(catalog, config=config)
    if args.warm:
        engine.warm()
    try:
        run_sandbox(
            config,
            host=args.host,
            port=args.port,
            engine=engine,
            body_timeout_s=args.body_timeout_s,
            idle_timeout_s=args.idle_timeout_s,
        )
    except OSError as exc:
        parser.error(_bind_error(exc, args.host, args.port))


def _reason(exc: BaseException) -> str:
    """An exception as a message: an ``OSError``'s reason and file, not its errno."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def _bind_error(exc: OSError, host: str, port: int) -> str:
    """Why the sandbox could not listen, naming the flag to change."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return f"--host: {host!r} does not resolve ({exc.strerror or exc})"
    if exc.errno == errno.EADDRINUSE:
        return f"--port: {port} is already in use on {host} (0 picks a free port)"
    if exc.errno == errno.EACCES:
        return f"--port: not allowed to listen on {where} (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host: {host!r} is not an address of this machine"
    return f"--host/--port: cannot listen on {where} ({exc.strerror or exc})"


# -- commands against a running sandbox ------------------------------------------------


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=None,
        help=f"the sandbox's base URL (default ${_URL_ENV}, else {_DEFAULT_URL})",
    )
    p.add_argument("--storefront", default="default", help="the storefront (a name from the config file)")


def _commands_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fashionai-pipeline sandbox", description="sandbox commands")
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
    save.add_argument(
        "--discount", choices=("all", "onlyWith", "onlyWithout"), help="the discount filter (default all)"
    )
    save.add_argument("--price-min", help="custom price range: lowest price in R$ (with --price-max)")
    save.add_argument("--price-max", help="custom price range: highest price in R$ (with --price-min)")
    save.add_argument("--above-10k", action="store_true", help="only products above R$ 10,000.00")
    save.add_argument(
        "--low-stock", type=int, metavar="LIMIT", help="leave out products with LIMIT units or fewer"
    )
    save.add_argument("--json", help="the settings as JSON instead of the flags above (excludes them)")
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


_FIELD_FLAGS: tuple[tuple[str, Callable[[argparse.Namespace], bool]], ...] = (
    ("--full-size-run", lambda a: bool(a.full_size_run)),
    ("--discount", lambda a: a.discount is not None),
    ("--price-min", lambda a: a.price_min is not None),
    ("--price-max", lambda a: a.price_max is not None),
    ("--above-10k", lambda a: bool(a.above_10k)),
    ("--low-stock", lambda a: a.low_stock is not None),
)


def _settings_body(args: argparse.Namespace, parser: argparse.ArgumentParser) -> bytes:
    if args.json is not None:
        given = [flag for flag, present in _FIELD_FLAGS if present(args)]
        if given:
            parser.error(f"--json and {given[0]} exclude each other: give the settings as JSON or as flags")
        return str(args.json).encode()
    body: dict[str, object] = {"fullSizeRun": args.full_size_run, "discount": args.discount or "all"}
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
    where = url.split("/_sandbox", maxsplit=1)[0]
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            shown = json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        detail = refused.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        print(f"error: the sandbox answered {refused.code}: {' '.join(str(detail).split())}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = " ".join(str(getattr(exc, "reason", exc) or type(exc).__name__).split())
        print(f"error: no sandbox answers at {where} ({reason}); start one or pass --url", file=sys.stderr)
        return 1
    except (ValueError, RecursionError):  # not JSON (or not UTF-8): something else answers there
        print(f"error: the answer from {where} is not JSON: is it a sandbox? (pass --url)", file=sys.stderr)
        return 1
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


def _sandbox_url(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The base URL from ``--url``, else ``$FASHIONAI_SANDBOX_URL``, else the default; checked."""
    if args.url is not None:
        url, source = str(args.url), "--url"
    elif os.environ.get(_URL_ENV):
        url, source = os.environ[_URL_ENV], _URL_ENV
    else:
        url, source = _DEFAULT_URL, "--url"
    example = f"an http:// or https:// URL with a host, such as {_DEFAULT_URL}"
    try:
        split = urllib.parse.urlsplit(url)
        split.port  # noqa: B018 - raises ValueError for a bad or out-of-range port
    except ValueError as exc:
        parser.error(f"{source}: not a valid URL ({exc}); give {example}")
    if split.scheme not in ("http", "https") or not split.hostname or _URL_CHARS.search(url):
        parser.error(f"{source}: must be {example}")
    return url.rstrip("/")


def _command(argv: Sequence[str]) -> int:
    parser = _commands_parser()
    args = parser.parse_args(argv)
    if args.command == "openapi":
        from fashionai_pipeline.sandbox.openapi import openapi

        print(json.dumps(openapi(), indent=2, sort_keys=True))
        return 0
    base = _sandbox_url(args, parser) + "/_sandbox"
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
