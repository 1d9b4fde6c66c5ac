"""Every exception the project raises on purpose.

The tree is split by what the caller should do about it::

    FashionAIError
    ├── InvalidEvent          (ValueError) bad input; names the field. Fix the caller.
    ├── PublishError          the broker did not take the event within the bound.
    │   └── BrokerUnavailable the broker could not be reached at all.
    ├── ConfigurationError    the deployment is wrong (e.g. the token is refused).
    └── DeliveryError         one upstream call failed; see `retryable`.
        ├── RetryableDelivery timeouts, connection errors, 429, 5xx: try again later.
        └── PermanentDelivery 400/401/403/404/422: retrying cannot help.

No message in this module ever contains the app token: callers build messages from
status codes, field names and response bodies, never from request headers.
"""

from __future__ import annotations


class FashionAIError(Exception):
    """Root of the project's exceptions."""


class InvalidEvent(FashionAIError, ValueError):
    """An event breaks the contract. `field` is the dotted name of the first bad field."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class PublishError(FashionAIError):
    """The event was not handed to the broker; it has not been queued."""


class BrokerUnavailable(PublishError):
    """The broker refused the connection or did not answer within the bound."""


class ConfigurationError(FashionAIError):
    """The deployment is misconfigured; no event-level retry will fix it."""


class DeliveryError(FashionAIError):
    """One upstream call failed."""

    retryable: bool = False

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.status = status
        self.body = body
        self.retry_after = retry_after
        super().__init__(reason if status is None else f"{reason} (HTTP {status})")


class RetryableDelivery(DeliveryError):
    """Timeout, connection error, 429 or 5xx: the same event may succeed later."""

    retryable = True


class PermanentDelivery(DeliveryError):
    """The upstream refused the event for good (400/401/403/404/422)."""
