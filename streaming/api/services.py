"""What the routes share, kept on ``app.state.services``: built by ``create_app``, connected by the lifespan.

One object rather than one ``app.state`` attribute each: every ``app.state`` lookup costs about
half a microsecond, so a route fetches the services once and then reads plain slots.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from core import service_registry
from core.broker_hold import BrokerHold
from core.forget_record import ForgetRecord
from core.kafka_config import durable_producer_config
from core.redis_client import redis_from_url
from core.settings import PulseSettings
from enrichment.reference_store import CampaignFollower, GeoFollower
from streaming.api.auth import Scope
from streaming.api.delivery import AcknowledgedProducer
from streaming.api.ip_privacy import IPAnonymizer
from streaming.api.keys_file import KeysFollower
from streaming.api.rate_limit import RateLimiter, SharedRateLimiter
from streaming.api.request_enrich import RequestEnricher
from streaming.api.segment import DEFAULT_TRACK_MAPPING, load_track_mapping
from streaming.profiles.store import RedisProfileStore
from streaming.profiles.suppression import ensure_mirror
from streaming.traits.follower import traits_follower

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ApiServices:
    """Settings-derived helpers plus the producer and store (``None`` until the lifespan connects them)."""

    settings: PulseSettings
    keys: KeysFollower
    anonymizer: IPAnonymizer
    enricher: RequestEnricher
    track_mapping: dict[str, str]
    limiter: RateLimiter | SharedRateLimiter
    forget_scope: Scope
    producer: AcknowledgedProducer | None
    store: RedisProfileStore | None

    @classmethod
    def from_settings(
        cls,
        settings: PulseSettings,
        *,
        producer: AcknowledgedProducer | None,
        store: RedisProfileStore | None,
    ) -> ApiServices:
        """Raises at start-up on missing keys or a bad keys, IP-hash or Segment mapping setting."""
        keys = KeysFollower.from_settings(settings)  # PULSE_*_KEYS plus PULSE_KEYS_FILE, reloaded on change
        anonymizer = IPAnonymizer.from_settings(settings)
        enricher = RequestEnricher(settings)  # geo and campaigns follow Redis once the lifespan connects
        track_mapping = (
            load_track_mapping(settings.segment_mapping_file)
            if settings.segment_mapping_file
            else DEFAULT_TRACK_MAPPING
        )
        return cls(
            settings=settings,
            keys=keys,
            anonymizer=anonymizer,
            enricher=enricher,
            track_mapping=track_mapping,
            limiter=RateLimiter(settings.rate_limit_events_per_second, settings.rate_limit_burst),
            # admin keys may forget either way
            forget_scope=Scope.ADMIN if settings.forget_requires_admin else Scope.READ,
            producer=producer,
            store=store,
        )


def services_of(request: Request) -> ApiServices:
    return request.app.state.services


def _restore_forget_mirror(store: RedisProfileStore) -> None:
    """At start-up: copy the durable forget record back into a wiped Redis (else the profile app will)."""
    if store.forget_record is None:
        return
    try:
        ensure_mirror(store.client, store.forget_record)
    except redis.RedisError as exc:
        logger.warning(
            "could not check the forget mirror in Redis at start-up (%s); the profile app will", exc
        )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Connect the producer and store the caller did not pass; close what was opened here."""
    services: ApiServices = app.state.services
    settings = services.settings
    given_producer = services.producer
    owned = []
    owned_tasks: list[asyncio.Task[None]] = []
    if services.producer is None:
        brokers = service_registry.kafka_brokers(settings)
        hold = BrokerHold(settings.broker_hold_dir) if settings.broker_hold_dir else None
        services.producer = AcknowledgedProducer(
            durable_producer_config(settings, brokers),
            hold,
            settings.embedded_broker_max_batches,
            settings.broker_hold_wait_seconds,
        )
        owned.append(services.producer)
    if services.store is None:
        client = redis_from_url(service_registry.redis_url(settings), socket_timeout=5)
        traits = traits_follower(settings)  # a bad file is logged; the API serves the built-in traits
        services.store = RedisProfileStore(
            client,
            dedupe_window_seconds=settings.dedupe_window_seconds,
            session_gap_ms=settings.session_timeout_seconds * 1000,
            identity_max_ids=settings.identity_max_ids,
            traits=traits.current,
            forget_record=ForgetRecord(settings.forget_path),
        )
        _restore_forget_mirror(services.store)
        owned_tasks.append(asyncio.create_task(_follow_reference_data(services.enricher, client, settings)))
        if settings.rate_limit_shared:  # short timeouts: ingestion must not wait on Redis
            limiter_client = redis_from_url(
                service_registry.redis_url(settings), socket_timeout=0.25, socket_connect_timeout=0.25
            )
            services.limiter = SharedRateLimiter(
                limiter_client, settings.rate_limit_events_per_second, settings.rate_limit_burst
            )
    # Everything built so far lives as long as the process: move it out of the collector's
    # reach, or each full collection walks it (~50 ms here) while requests queue behind it.
    gc.collect()
    gc.freeze()
    logger.info("API ready on %s:%s", settings.api_host, settings.api_port)
    yield
    for task in owned_tasks:
        task.cancel()
    for item in owned:
        await run_in_threadpool(item.close)
    services.producer = given_producer  # drop the owned producer so its threads end


async def _follow_reference_data(enricher: RequestEnricher, client: Any, settings: PulseSettings) -> None:
    """Keep the enricher's geo and campaigns current, off the request path (a read never blocks one)."""
    geo = GeoFollower(client, settings.catalog_refresh_seconds)
    campaigns = CampaignFollower(client, settings.catalog_refresh_seconds)
    enricher.geo = lambda: geo.value
    enricher.campaigns = lambda: campaigns.value
    while True:
        for follower in (geo, campaigns):
            try:
                await run_in_threadpool(follower.current)
            except Exception:  # noqa: BLE001 - a bad dataset must not stop the collector: keep the last
                logger.exception(
                    "reading %s for request enrichment failed; keeping the last", type(follower).__name__
                )
        await asyncio.sleep(settings.catalog_refresh_seconds)
