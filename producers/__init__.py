"""The storefront side of fashionai-pipeline: publish events, read rankings.

Importing this package pulls in neither Celery nor httpx, and connects to nothing.
"""

# In a checkout the folder `producers/` is importable from the repository root under its
# bare name too; refuse that, so no module of the project is ever loaded twice.
if __name__ != "fashionai_pipeline.producers":
    raise ImportError(f"import fashionai_pipeline.producers, not {__name__}")

from fashionai_pipeline.producers.errors import (
    BrokerUnavailable,
    CacheUnavailable,
    ConfigurationError,
    FashionAIError,
    InvalidEvent,
    InvalidMessage,
    PublishError,
    PublishUnknown,
)
from fashionai_pipeline.producers.event import Event, EventData, EventType, make_event, parse_event
from fashionai_pipeline.producers.publisher import AsyncPublisher, Publisher
from fashionai_pipeline.producers.publishing import PublishStats, Receipt
from fashionai_pipeline.producers.reader import AsyncRankingReader, Ranking, RankingReader
from fashionai_pipeline.producers.redaction import redact
from fashionai_pipeline.producers.serving import AsyncRankingServer, RankingServer, Served
from fashionai_pipeline.producers.settings import Settings

__all__ = [
    "AsyncPublisher",
    "AsyncRankingReader",
    "AsyncRankingServer",
    "BrokerUnavailable",
    "CacheUnavailable",
    "ConfigurationError",
    "Event",
    "EventData",
    "EventType",
    "FashionAIError",
    "InvalidEvent",
    "InvalidMessage",
    "PublishError",
    "PublishStats",
    "PublishUnknown",
    "Publisher",
    "Ranking",
    "RankingReader",
    "RankingServer",
    "Receipt",
    "Served",
    "Settings",
    "make_event",
    "parse_event",
    "redact",
]
