"""Realistic shop traffic (pure): visitors browse categories, search, fill carts, buy, sign in.

About 2% of events are re-sent duplicates (same event_id) and about 1% are invalid, so the
demo shows deduplication and the dead-letter topic at work.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.time_format import iso_millis

DUPLICATE_RATE = 0.02
INVALID_RATE = 0.01
SEARCH_TERMS = ["running shoes", "headphones", "coffee", "yoga mat", "gift", "lamp", "novel", "serum"]


@dataclass
class Visitor:
    anonymous_id: str
    user_id: str | None = None
    favourite_category: str = ""
    cart: dict[str, int] = field(default_factory=dict)
    clock: datetime = field(default_factory=lambda: datetime.now(UTC))


def _invalid_variant(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A broken copy of an event, the way real clients break them."""
    broken = dict(event)
    broken["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    choice = rng.randrange(5)
    if choice == 0:
        del broken["event_id"]
    elif choice == 1:
        broken["timestamp"] = "yesterday at noon"
    elif choice == 2:
        broken["event_type"] = "Page View!"
    elif choice == 3:
        broken.pop("user_id", None)
        broken.pop("anonymous_id", None)
    else:
        broken["event_type"] = "purchase"
        broken["metadata"] = {"order_id": "o-bad", "price": -5}
    return broken


class TrafficGenerator:
    """Yields event dicts; ``products`` maps product_id -> category."""

    def __init__(
        self, products: Mapping[str, str], users: int, seed: int | None = None, start: datetime | None = None
    ) -> None:
        if not products:
            raise ValueError("the demo needs a product catalog")
        self.rng = random.Random(seed)
        self.by_category: dict[str, list[str]] = {}
        for product_id, category in products.items():
            self.by_category.setdefault(category, []).append(product_id)
        self.categories = sorted(self.by_category)
        start = start or datetime.now(UTC) - timedelta(hours=2)
        self.visitors = [
            Visitor(
                anonymous_id=f"anon-{uuid.UUID(int=self.rng.getrandbits(128), version=4).hex[:12]}",
                favourite_category=self.rng.choice(self.categories),
                clock=start + timedelta(seconds=self.rng.uniform(0, 3600)),
            )
            for _ in range(users)
        ]
        self.sent: list[dict[str, Any]] = []

    def _event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _base(self, visitor: Visitor, event_type: str, metadata: dict[str, Any]) -> dict[str, Any]:
        gap = self.rng.expovariate(1 / 40) if self.rng.random() > 0.05 else self.rng.uniform(1800, 7200)
        visitor.clock += timedelta(seconds=gap)
        event: dict[str, Any] = {
            "event_id": self._event_id(),
            "event_type": event_type,
            "anonymous_id": visitor.anonymous_id,
            "timestamp": iso_millis(visitor.clock),
            "metadata": metadata,
        }
        if visitor.user_id:
            event["user_id"] = visitor.user_id
        return event

    def _next_valid(self) -> dict[str, Any]:
        rng = self.rng
        visitor = rng.choice(self.visitors)
        category = visitor.favourite_category if rng.random() < 0.7 else rng.choice(self.categories)
        product = rng.choice(self.by_category[category])
        roll = rng.random()
        if visitor.user_id is None and roll < 0.03:
            visitor.user_id = f"user-{visitor.anonymous_id[5:]}"
            return self._base(visitor, "identify", {"traits": {"email_domain": "example.com"}})
        if roll < 0.55:
            meta: dict[str, Any] = {"product_id": product, "url": f"https://shop.example/p/{product}"}
            if rng.random() < 0.6:  # the rest get their category from the catalog
                meta["category"] = category
            return self._base(visitor, "page_view", meta)
        if roll < 0.68:
            return self._base(visitor, "click", {"product_id": product, "element": "recommendation"})
        if roll < 0.75:
            return self._base(visitor, "search", {"query": rng.choice(SEARCH_TERMS)})
        if roll < 0.88 or not visitor.cart:
            quantity = rng.choice([1, 1, 1, 2, 3])
            visitor.cart[product] = visitor.cart.get(product, 0) + quantity
            return self._base(
                visitor,
                "add_to_cart",
                {"product_id": product, "quantity": quantity, "price": round(rng.uniform(5, 300), 2)},
            )
        in_cart = rng.choice(sorted(visitor.cart))
        if roll < 0.93:
            quantity = visitor.cart.pop(in_cart)
            return self._base(visitor, "remove_from_cart", {"product_id": in_cart, "quantity": quantity})
        quantity = visitor.cart.pop(in_cart)
        return self._base(
            visitor,
            "purchase",
            {
                "order_id": f"o-{self._event_id()[:8]}",
                "product_id": in_cart,
                "quantity": quantity,
                "price": round(rng.uniform(5, 300), 2),
                "currency": "USD",
            },
        )

    def events(self, total: int) -> Iterator[dict[str, Any]]:
        """``total`` events: mostly valid, some duplicates of earlier ones, some invalid."""
        for _ in range(total):
            roll = self.rng.random()
            if roll < DUPLICATE_RATE and self.sent:
                yield dict(self.rng.choice(self.sent))
            elif roll < DUPLICATE_RATE + INVALID_RATE and self.sent:
                yield _invalid_variant(self.rng.choice(self.sent), self.rng)
            else:
                event = self._next_valid()
                self.sent.append(event)
                yield event
