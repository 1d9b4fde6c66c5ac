"""The storefront side of fashionai-pipeline: publish events, read rankings.

Importing this package pulls in neither Celery nor httpx, and connects to nothing.
"""

from producers.errors import BrokerUnavailable, FashionAIError, InvalidEvent, PublishError
from producers.event import Event, EventData, EventType, make_event, parse_event
from producers.publisher import AsyncPublisher, Publisher
from producers.reader import AsyncRankingReader, Ranking, RankingReader
from producers.settings import Settings

__all__ = [
    "AsyncPublisher",
    "AsyncRankingReader",
    "BrokerUnavailable",
    "Event",
    "EventData",
    "EventType",
    "FashionAIError",
    "InvalidEvent",
    "PublishError",
    "Publisher",
    "Ranking",
    "RankingReader",
    "Settings",
    "make_event",
    "parse_event",
]
