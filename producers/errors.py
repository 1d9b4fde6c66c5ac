"""Every exception the storefront package raises on purpose, split by what the caller should do::

    FashionAIError
    ├── ConfigurationError (ValueError)  settings that cannot work: a FASHIONAI_* value that fails
    │                                    validation (names the variable and the rule, never echoes a
    │                                    secret), an unknown tenant in the settings. Fix the deployment.
    ├── InvalidEvent (ValueError)        an event breaks the contract (docs/UPSTREAM.md); `.field`,
    │                                    `.rule`. An unknown tenant or a malformed message id is one
    │                                    too ("tenant", "message_id"). Fix the caller; never retry.
    ├── PublishError                     the broker did not confirm the event; `.message_ids`
    │   ├── BrokerUnavailable            NOT published: the connection failed or was refused, or the
    │   │                                broker refused the command (OOM, WRONGTYPE, READONLY, a
    │   │                                RabbitMQ nack or a blocked connection). Safe to publish again.
    │   └── PublishUnknown               sent, but no answer within the bound: it may or may not be
    │                                    queued. Publish again with the same message id; the worker
    │                                    drops an id it has already recorded.
    ├── CacheUnavailable                 the ranking cache did not answer (RankingReader.get;
    │                                    order() falls back to the native ordering instead).
    └── InvalidMessage                   a queue message cannot be decoded (the worker dead-letters it).

Third-party exceptions are translated at one boundary per dependency, with `raise ... from
exc`: redis-py in producers.transport, kombu in producers.sink, pydantic in producers.settings
and producers.event. Nothing from redis, kombu or pydantic escapes a public call of this
package. Settings errors are the one exception: they are raised without their pydantic cause,
because a pydantic error holds the input value, which may hold a token.

No message in this module's classes ever contains a token: callers build them from field
names, rules, status codes and broker error words, never from request headers or settings
values.
"""

from __future__ import annotations

from collections.abc import Sequence


class FashionAIError(Exception):
    """Root of the package's exceptions."""


class ConfigurationError(FashionAIError, ValueError):
    """The settings cannot work; no retry will fix it. The message names the variable."""


class InvalidEvent(FashionAIError, ValueError):
    """An event breaks the contract. `field` is the dotted name of the first bad field."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class PublishError(FashionAIError):
    """The broker did not confirm the events named by `message_ids` (envelope ids)."""

    def __init__(self, reason: str, message_ids: Sequence[str] = ()) -> None:
        self.reason = reason
        self.message_ids: tuple[str, ...] = tuple(message_ids)
        super().__init__(reason)

    def __reduce__(self) -> tuple[object, ...]:  # copy/pickle keep the ids
        return (type(self), (self.reason, self.message_ids))


class BrokerUnavailable(PublishError):
    """Not published: nothing named by `message_ids` was queued. Publishing again is safe."""


class PublishUnknown(PublishError):
    """Sent, unanswered within the bound: each event of `message_ids` may or may not be queued
    (the events of a list that were not sent yet are named too: publishing an id again is safe).

    Publish again with `message_id=` each id (the worker drops an id it has recorded).
    """


class CacheUnavailable(FashionAIError):
    """The ranking cache did not answer."""


class InvalidMessage(FashionAIError):
    """A message on the queue that cannot be decoded; the worker dead-letters it."""
