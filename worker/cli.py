"""The `fashionai-pipeline` command line.

    fashionai-pipeline worker [celery worker options]
    fashionai-pipeline sandbox [--port P] [knobs]
    fashionai-pipeline publish (--event-type T --id I --session S [--user U] | --file F)
    fashionai-pipeline rankings get --event-type T --id I --session S [--user U]
    fashionai-pipeline dlq (list | show ID | replay [--reason R] [--since T] | purge)
    fashionai-pipeline stats
    fashionai-pipeline demo
    fashionai-pipeline serve [--host H] [--port P]

Configuration comes from FASHIONAI_* environment variables (producers.settings).
Exit codes: 0 success; 1 the command ran but something was refused, not published, of
unknown fate, missing, or a Redis/broker it needs did not answer (or `serve` could not bind);
2 usage or configuration error (an unknown option, a number out of range, a FASHIONAI_* value
that fails validation, a malformed dead-letter id, a --file that cannot be opened); 130
interrupted (Ctrl-C). No input and no unreachable server ends a command with a traceback:
every error is one line on stderr naming the option or variable, with every token of the
deployment redacted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import IO, Any

import redis

from fashionai_pipeline.producers.errors import (
    BrokerUnavailable,
    ConfigurationError,
    FashionAIError,
    PublishError,
    PublishUnknown,
)
from fashionai_pipeline.producers.event import EVENT_TYPES, make_event, parse_event
from fashionai_pipeline.producers.publisher import Publisher
from fashionai_pipeline.producers.publishing import Receipt
from fashionai_pipeline.producers.reader import RankingReader
from fashionai_pipeline.producers.redaction import redact
from fashionai_pipeline.producers.settings import Settings, environment_secrets, redact_url

# The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args_list)
    except KeyboardInterrupt:  # Ctrl-C where no command reports what it had done
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`| head`): nothing more to say
        _quiet_stdout()
        return 1


def _main(args_list: list[str]) -> int:
    parser = _parser()
    if args_list and args_list[0] in ("worker", "sandbox"):
        # Everything after the command belongs to Celery / the sandbox parser.
        command, rest = args_list[0], args_list[1:]
        return _worker(rest) if command == "worker" else _sandbox(rest)
    args = parser.parse_args(args_list)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        settings = Settings()
    except ConfigurationError as exc:  # already redacted, names the variable
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings))
    except FashionAIError as exc:
        print(f"error: {redact(str(exc), settings.secrets())}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigurationError) else 1
    except argparse.ArgumentTypeError as exc:  # a value only the command could check
        print(f"error: {redact(str(exc), settings.secrets())}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:  # the CLI's own Redis reads (dead letters, stats)
        print(
            f"error: redis {_redis_role(args, settings)}: {type(exc).__name__}: "
            f"{redact(str(exc), settings.secrets())}",
            file=sys.stderr,
        )
        return 1
    except BrokenPipeError:
        raise
    except OSError as exc:  # not a Redis one (redis-py wraps its socket errors): say what it is
        print(f"error: {type(exc).__name__}: {redact(str(exc), settings.secrets())}", file=sys.stderr)
        return 1


def _redis_role(args: argparse.Namespace, settings: Settings) -> str:
    """The Redis a command's own reads go to, as `URL (VARIABLE, role)`, its password masked."""
    if getattr(args, "redis_role", "") != "state":
        return f"{redact_url(settings.redis_url)} (FASHIONAI_REDIS_URL, the ranking cache)"
    if settings.state_url:
        return f"{redact_url(settings.state_url)} (FASHIONAI_STATE_URL, the state store)"
    return (
        f"{redact_url(settings.broker_url)} (FASHIONAI_BROKER_URL, the state store while"
        " FASHIONAI_STATE_URL is unset)"
    )


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its usage errors one line (no usage block), tokens redacted."""

    def error(self, message: str) -> Any:  # argparse types it NoReturn
        line = f"error: {self.prog}: {message} (see {self.prog} --help)"
        print(redact(line, environment_secrets()), file=sys.stderr)
        sys.exit(2)


# -- values of the options: each refused with its name, exit status 2 -----------------


def _int_in(low: int, high: int | None, what: str = "") -> Any:
    """An argparse type: an integer from `low` to `high` (None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:  # also a number of more than 4300 digits
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range: {what or bound}")
        return value

    parse.__name__ = "integer"
    return parse


def _seconds(high: float) -> Any:
    """An argparse type: a finite number of seconds, more than 0 and at most `high`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
        if not math.isfinite(value) or not 0 < value <= high:
            raise argparse.ArgumentTypeError(
                f"{text[:40]!r} is out of range: more than 0, at most {high:g} seconds"
            )
        return value

    parse.__name__ = "seconds"
    return parse


# A dead letter's id is its stream id, `MILLISECONDS-SEQUENCE`, both unsigned 64-bit.
_MAX_SINCE = (2**64 - 1) // 1000


def _since(value: str | None) -> float | None:
    """--since as unix seconds: a number or ISO 8601, from 1970 to what a stream id can hold."""
    if value is None:
        return None
    shown = value[:40]
    out_of_range = argparse.ArgumentTypeError(
        f"--since {shown!r}: out of range: a time from 1970-01-01 (unix 0) to unix {_MAX_SINCE}"
    )
    try:
        since = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--since {shown!r}: not ISO 8601 nor unix seconds") from None
        try:
            since = when.timestamp()
        except (ValueError, OverflowError, OSError):  # a year before the platform's epoch
            raise out_of_range from None
    if not math.isfinite(since) or since < 0 or int(since * 1000) > 2**64 - 1:  # as the store sends it
        raise out_of_range
    return since


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fashionai-pipeline",
        description="Storefront events to Fashion.AI through Celery workers; rankings into Redis.",
        epilog="Configuration: FASHIONAI_* environment variables (see README).",
    )
    sub = parser.add_subparsers(title="commands")
    sub.add_parser(
        "worker",
        help="run a Celery worker of the project's app (celery worker options follow)",
        add_help=False,
    )
    sub.add_parser("sandbox", help="run the Fashion.AI-compatible sandbox server", add_help=False)

    pub = sub.add_parser("publish", help="publish one event from flags, or many from a JSON Lines file")
    pub.add_argument("--event-type", choices=EVENT_TYPES)
    pub.add_argument("--id", default="", help='data.id (product or category id; "" for customShelf)')
    pub.add_argument("--session", help="sessionId")
    pub.add_argument("--user", help="userId (optional)")
    pub.add_argument("--file", help="JSON Lines of Fashion.AI event bodies (docs/UPSTREAM.md); '-' for stdin")
    pub.set_defaults(func=_publish)

    rankings = sub.add_parser("rankings", help="read cached rankings")
    rsub = rankings.add_subparsers(title="rankings commands")
    get = rsub.add_parser("get", help="print the cached ranking as JSON")
    get.add_argument("--event-type", required=True, choices=EVENT_TYPES)
    get.add_argument("--id", default="")
    get.add_argument("--session", required=True)
    get.add_argument("--user")
    get.set_defaults(func=_rankings_get)

    dlq = sub.add_parser("dlq", help="inspect, replay and purge dead letters")
    dsub = dlq.add_subparsers(title="dlq commands")
    dl = dsub.add_parser("list", help="list dead letters, oldest first")
    dl.add_argument("--reason", help="only entries whose reason contains this text")
    dl.add_argument("--since", help="only entries dead since this time (ISO 8601 or unix seconds)")
    dl.add_argument(
        "--limit", type=_int_in(0, None), default=50, help="at most this many entries (0: none; default 50)"
    )
    dl.set_defaults(func=_dlq_list, redis_role="state")
    ds = dsub.add_parser("show", help="print one dead letter as JSON")
    ds.add_argument("dlq_id")
    ds.set_defaults(func=_dlq_show, redis_role="state")
    dr = dsub.add_parser("replay", help="publish dead letters' events again, then remove them")
    dr.add_argument("--reason")
    dr.add_argument("--since")
    dr.set_defaults(func=_dlq_replay, redis_role="state")
    dp = dsub.add_parser("purge", help="delete every dead letter")
    dp.add_argument("--yes", action="store_true", help="do not ask")
    dp.set_defaults(func=_dlq_purge, redis_role="state")

    stats = sub.add_parser("stats", help="print the pipeline's counters as JSON")
    stats.set_defaults(func=_stats, redis_role="state")

    demo = sub.add_parser("demo", help="run the whole pipeline locally against the sandbox")
    demo.add_argument("--sessions", type=_int_in(1, 10_000), default=60, help="shopper sessions (1-10000)")
    demo.add_argument(
        "--timeout", type=_seconds(86_400), default=120.0, help="seconds to wait for delivery (at most 86400)"
    )
    demo.set_defaults(func=_demo)

    serve = sub.add_parser("serve", help="run the HTTP service (any backend over HTTP: docs/SERVICE.md)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port", type=_int_in(0, 65535, "a TCP port, 0-65535 (0: any free port)"), default=8080
    )
    serve.set_defaults(func=_serve)
    return parser


# -- worker and sandbox: hand the rest of the line over ------------------------------


def _worker(rest: list[str]) -> int:
    try:
        settings = Settings()
    except ConfigurationError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return 2
    if settings.metrics_port:
        # Multiprocess mode must be chosen before anything imports prometheus_client.
        import os
        import tempfile

        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fashionai-metrics-"))
    from fashionai_pipeline.worker.app import create_app

    try:
        app = create_app(settings)
    except FashionAIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not any(a.startswith(("-l", "--loglevel")) for a in rest):
        rest = ["--loglevel", settings.log_level, *rest]
    import click

    # Celery's command line is click's, run with standalone_mode=False: its usage errors
    # come out as exceptions. One line each, naming the option, status 2 like ours.
    try:
        code = app.start(argv=["worker", *rest])
    except click.ClickException as exc:  # a UsageError (NoSuchOption, BadParameter, ...) exits 2
        print(f"error: worker: {redact(exc.format_message(), settings.secrets())}", file=sys.stderr)
        return exc.exit_code or 1
    except click.Abort:  # Ctrl-C or end of input at one of click's prompts
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return int(code or 0)


def _sandbox(rest: list[str]) -> int:
    from fashionai_pipeline.sandbox.__main__ import main as sandbox_main

    return sandbox_main(rest)


# -- publish -------------------------------------------------------------------------


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    publisher = Publisher(settings)
    try:
        if args.file is None:
            if not args.event_type or not args.session:
                print("error: publish needs --event-type and --session, or --file", file=sys.stderr)
                return 2
            verdict = _verdict(publisher, make_event(args.event_type, args.session, args.id, args.user))
            safe = verdict.startswith(_SAFE)
            print(f"event: {verdict}", file=sys.stdout if safe else sys.stderr)
            return 0 if safe else 1
        return _publish_lines(publisher, args.file)
    finally:
        publisher.close()


def _publish_lines(publisher: Publisher, path: str) -> int:
    """One verdict per non-blank line, by number; a bad line never stops the ones after it.

    Ctrl-C stops it between lines or during one: the summary of the lines done is printed
    (on stderr), with the line whose publish it interrupted, and the status is 130.
    """
    counts = {"published": 0, "spooled": 0, "refused": 0, "not published": 0, "unknown": 0}
    stream = _open_events(path)
    if stream is None:
        return 2
    sending = 0  # the line being published when Ctrl-C came, if one was
    try:
        with stream:
            for lineno, raw in enumerate(_lines(stream), 1):
                if not raw.strip():
                    continue
                try:
                    event = parse_event(_json_line(raw))
                except ValueError as exc:  # InvalidEvent, or a line that is not JSON
                    verdict = f"refused: {exc}"
                else:
                    sending = lineno
                    verdict = _verdict(publisher, event)
                    sending = 0
                kind = next(k for k in counts if verdict.startswith(k))
                counts[kind] += 1
                # Published lines on stdout; every other verdict on stderr, where errors go.
                print(
                    f"line {lineno}: {verdict}",
                    file=sys.stdout if kind in _SAFE else sys.stderr,
                    flush=True,
                )
    except KeyboardInterrupt:
        during = f"; line {sending} was being published: its fate is unknown" if sending else ""
        print(f"interrupted: {_summary(counts)} before the interrupt{during}", file=sys.stderr)
        return INTERRUPTED
    print(_summary(counts))
    return 0 if counts["published"] + counts["spooled"] == sum(counts.values()) else 1


def _summary(counts: dict[str, int]) -> str:
    spooled = f", spooled {counts['spooled']}" if counts["spooled"] else ""
    return (
        f"published {counts['published']} event(s){spooled}, refused {counts['refused']}, "
        f"not published {counts['not published']}, unknown {counts['unknown']}"
    )


def _open_events(path: str) -> IO[bytes] | None:
    """The --file to read (standard input for '-'); None, after one line naming --file, if it
    cannot be opened (missing, a directory, not readable)."""
    if path == "-":
        if sys.stdin is None:
            print("error: --file -: there is no standard input", file=sys.stderr)
            return None
        return sys.stdin.buffer
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(21, "Is a directory")
        return open(path, "rb")  # closed by the caller's with
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"error: --file {path!r}: cannot be read: {reason}", file=sys.stderr)
        return None


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream's lines as bytes, a UTF-8 byte order mark at the start left out."""
    first = True
    for raw in stream:
        yield raw.removeprefix(b"\xef\xbb\xbf") if first else raw
        first = False


def _json_line(raw: bytes) -> Any:
    """One line's JSON value. Raises ValueError with a reason a person can act on."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


# Verdicts that mean the event is safe: on the broker, or in the disk spool.
_SAFE = ("published", "spooled")


def _verdict(publisher: Publisher, event: Any) -> str:
    """What became of one publish, as a line: published / not published / unknown, with the id."""
    try:
        receipt: Receipt = publisher.publish(event)
    except PublishUnknown as exc:
        return f"unknown: {exc} (message id {exc.message_ids[0]}: publish again with that id)"
    except BrokerUnavailable as exc:
        return f"not published: {exc}"
    except PublishError as exc:  # pragma: no cover - every PublishError is one of the two
        return f"not published: {exc}"
    if receipt.outcome == "published":
        return f"published (message id {receipt.id})"
    if receipt.outcome == "spooled":
        return f"spooled (message id {receipt.id}): on this host's disk until a publisher replays it"
    if receipt.outcome == "unknown":
        return f"unknown: sent, not confirmed (message id {receipt.id}: publish again with that id)"
    return f"not published: dropped, the broker is unavailable (message id {receipt.id})"


# -- rankings ------------------------------------------------------------------------


def _rankings_get(args: argparse.Namespace, settings: Settings) -> int:
    make_event(args.event_type, args.session, args.id, args.user)  # same rules as publishing
    reader = RankingReader(settings)
    ranking = reader.get(args.event_type, args.id, args.session, args.user)
    who = f"user {args.user}" if args.user else f"session {args.session}"
    if ranking is None:
        print(f"no ranking cached for {args.event_type} {args.id!r} and {who}", file=sys.stderr)
        return 1
    out = {
        "eventType": args.event_type,
        "id": args.id,
        "products": ranking.products,
        "enqueued_at": ranking.enqueued_at,
    }
    print(json.dumps(out))
    if ranking.empty:
        print(
            "ranking is empty: Fashion.AI lacks data for this shopper yet; use the native ordering",
            file=sys.stderr,
        )
    return 0


# -- dead letters --------------------------------------------------------------------


def _store(settings: Settings) -> Any:
    """The dead letters, in the state store (raises ConfigurationError without one)."""
    from fashionai_pipeline.worker.deadletter import DeadLetterStore

    return DeadLetterStore(redis.Redis.from_url(settings.state_store_url()))


def _dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    shown = 0
    for letter in store.iter(reason=args.reason, since=_since(args.since)):
        if shown >= args.limit:
            break
        e = letter.entry
        event = e.get("event") or {}
        when = datetime.fromtimestamp(letter.dead_at).isoformat(timespec="seconds")
        print(
            f"{letter.dlq_id}  {when}  {e.get('kind'):<11}  status={e.get('status')}  "
            f"attempts={e.get('attempts')}  {event.get('eventType', '-')}  {e.get('reason')}"
        )
        shown += 1
    print(f"{shown} shown, {store.count()} dead letter(s) in all", file=sys.stderr)
    return 0


_DLQ_ID = re.compile(r"\d{1,20}(-\d{1,20})?")


def _dlq_show(args: argparse.Namespace, settings: Settings) -> int:
    if not _DLQ_ID.fullmatch(args.dlq_id):
        print(
            f"error: dlq show: {args.dlq_id!r} is not a dead-letter id (MILLISECONDS-SEQUENCE, "
            "as `dlq list` prints them)",
            file=sys.stderr,
        )
        return 2
    letter = _store(settings).get(args.dlq_id)
    if letter is None:
        print(f"no dead letter {args.dlq_id}", file=sys.stderr)
        return 1
    print(json.dumps({"dlq_id": letter.dlq_id, **letter.entry}, indent=2))
    return 0


def _dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    publisher = Publisher(settings)

    def republish(event: dict[str, Any], tenant: str) -> None:
        # A new message id: the old one was recorded (dead-lettered), so the worker would drop it.
        receipt = publisher.publish(event, tenant=tenant)
        if not receipt:  # dropped or unknown (on_broker_down=drop): the entry must stay
            raise BrokerUnavailable(f"not published ({receipt.outcome}); the dead letter stays", [receipt.id])

    report = _store(settings).replay(
        republish, reason=args.reason, since=_since(args.since), progress=_progress_bar(sys.stderr)
    )
    for dlq_id, why in report.skipped:
        print(f"skipped {dlq_id}: {why}", file=sys.stderr)
    print(f"replayed {report.replayed}, skipped {len(report.skipped)} (they stay in the store)")
    return 0


def _dlq_purge(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if not args.yes and sys.stdin.isatty():
        try:
            answer = input(f"delete all {store.count()} dead letters? [y/N] ")
        except EOFError:  # Ctrl-D: no answer is no
            answer = ""
        if answer.strip().lower() != "y":
            return 1
    print(f"purged {store.purge()} dead letter(s)")
    return 0


def _progress_bar(out: IO[str]) -> Any:
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            out.write("\n")
        out.flush()

    return show


# -- stats and demo ------------------------------------------------------------------


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    from fashionai_pipeline.producers import keys

    # Counters live in the state store, written in the transaction that records
    # the outcomes they count, so they agree with the retries and dead letters.
    client = redis.Redis.from_url(settings.state_store_url(), decode_responses=True)
    if settings.tenants:
        out: dict[str, Any] = {
            t: {str(k): int(v) for k, v in client.hgetall(keys.stats(t)).items()}
            for t in settings.tenant_names()
        }
    else:
        out = {str(k): int(v) for k, v in client.hgetall(keys.stats(settings.tenant)).items()}
    out["dead_letters"] = int(client.xlen(keys.dead_letters()))
    print(json.dumps(out, sort_keys=True))
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from fashionai_pipeline.worker.demo import run_demo

    return run_demo(settings, sessions=args.sessions, timeout=args.timeout)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from fashionai_pipeline.producers.service.run import serve

    return serve(settings, host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
