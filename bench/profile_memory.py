"""Redis memory per profile, measured through the profile app's own write path.

Loads N synthetic profiles into a fresh embedded Valkey with ``RedisProfileStore.apply_deltas``
(``update.lua``), the deltas made by ``streaming.profiles.delta.profile_delta`` from validated
events, and reads INFO ``used_memory`` before and after. Then deletes the ``event_id`` markers
(what expiry does once the dedupe window has passed) and reads it again, which separates:

- the profile itself (fields hash, anonymous ids, last products, sessions, identity link);
- one dedupe marker per distinct event, kept for PULSE_DEDUPE_WINDOW_SECONDS.

It also reports the CPU time of Redis's main thread per delta (INFO cpu), and the time spent
inside the script (INFO commandstats), which bound how many events/s one Redis primary applies.

Each profile is a known shopper with --events events over two sessions: an identify linking an
anonymous id, page views over three categories, a search, two add-to-carts and a purchase.

Events fall in the last 25 days, so windowed traits (counts_7d/30d, windowed user traits) have
cells; ``--traits FILE`` adds the user traits of FILE, ``--traits none`` runs without passing any
(the built-in traits of this code, or a code version that has no traits at all).

Usage: .venv/bin/python -m bench.profile_memory [--profiles 200000] [--events 10] [--traits none|FILE]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

from orchestration.local_services import start_redis
from quality.event_contract import validate_event
from streaming.profiles.delta import ProfileDelta, event_category, profile_delta
from streaming.profiles.store import RedisProfileStore

CATEGORIES = ["electronics", "books", "fashion", "home", "sports", "toys", "beauty", "grocery"]
DAY_MS = 86_400_000
BATCH = 5_000
NOW_MS = int(time.time() * 1000)


def shopper_events(rng: random.Random, user: int, count: int) -> Iterator[dict]:
    """``count`` valid events of one user: two sessions a day apart."""
    user_id, anonymous_id = f"user-{user:08d}", f"anon-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
    categories = rng.sample(CATEGORIES, 3)
    start = NOW_MS - 2 * DAY_MS - rng.randrange(23 * DAY_MS)
    plan = ["identify", "search", "add_to_cart", "add_to_cart", "purchase"]
    plan += ["page_view"] * max(0, count - len(plan))
    for i, event_type in enumerate(plan[:count]):
        ts = start + (DAY_MS if i >= count // 2 else 0) + i * 30_000
        product = f"p{rng.randrange(1, 2001):05d}"
        metadata: dict = {}
        if event_type == "page_view":
            metadata = {
                "product_id": product,
                "category": rng.choice(categories),
                "url": f"https://shop.example/p/{product}",
                "referrer": rng.choice(["https://www.google.com/", "https://news.example/"]),
            }
        elif event_type == "search":
            metadata = {"query": rng.choice(categories)}
        elif event_type == "add_to_cart":
            metadata = {"product_id": product, "quantity": 1, "price": 19.99}
        elif event_type == "purchase":
            metadata = {"order_id": f"o-{user}", "product_id": product, "quantity": 1, "price": 19.99}
        event = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "event_type": event_type,
            "user_id": user_id,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts / 1000)) + f".{ts % 1000:03d}Z",
            "metadata": metadata,
        }
        if event_type == "identify":
            event["anonymous_id"] = anonymous_id
            event["metadata"] = {"traits": {"plan": rng.choice(["free", "pro"]), "company": f"c{user % 97}"}}
        yield event


def deltas_for(
    profiles: range, events_per_profile: int, seed: int, traits: object = None
) -> Iterator[list[ProfileDelta]]:
    """Batches of deltas for the given profile numbers, as the profile app would compute them."""
    rng = random.Random(seed)
    batch: list[ProfileDelta] = []
    for user in profiles:
        for raw in shopper_events(rng, user, events_per_profile):
            event = validate_event(raw)
            category = event_category(event, None)
            extra = () if traits is None else (traits,)
            batch.append(profile_delta(event, category, *extra))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def used_memory(client: redis.Redis) -> int:
    client.execute_command("MEMORY", "PURGE")  # return freed pages, so deltas are not hidden
    return int(client.info("memory")["used_memory"])


def main_thread_cpu(client: redis.Redis) -> float:
    """CPU seconds of the server's main thread, where commands run (not wall time, so a busy
    machine inflates it less than the command timings)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def delete_markers(client: redis.Redis) -> int:
    deleted = 0
    keys: list[bytes] = []
    for key in client.scan_iter(match="pulse:*:seen:*", count=10_000):
        keys.append(key)
        if len(keys) >= 10_000:
            deleted += client.unlink(*keys)
            keys = []
    if keys:
        deleted += client.unlink(*keys)
    return deleted


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=10, help="events per profile (at least 5)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--traits", default="data/traits/traits.yaml", help="a traits file, or none")
    args = parser.parse_args()
    traits = None
    if args.traits != "none":
        from streaming.traits.loader import load_traits

        traits = load_traits(args.traits)

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp), persist=False)
        try:
            client = redis.Redis.from_url(url)
            store = RedisProfileStore(client, dedupe_window_seconds=7 * 86_400, session_gap_ms=1_800_000)
            server = client.info("server")
            baseline = used_memory(client)
            client.config_resetstat()
            cpu_before = main_thread_cpu(client)
            began, applied = time.perf_counter(), 0
            for batch in deltas_for(range(args.profiles), args.events, args.seed, traits):
                applied += store.apply_deltas(batch)
            elapsed = time.perf_counter() - began
            cpu_seconds = main_thread_cpu(client) - cpu_before
            script_usec = sum(
                int(stat["usec"])
                for name, stat in client.info("commandstats").items()
                if name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall")
            )
            loaded = used_memory(client)
            keys_loaded = client.dbsize()
            markers = delete_markers(client)
            profiles_only = used_memory(client)
        finally:
            proc.stop()

    per_profile = (profiles_only - baseline) / args.profiles
    per_marker = (loaded - profiles_only) / markers
    per_profile_with_markers = (loaded - baseline) / args.profiles
    print(f"traits: {args.traits}")
    print(
        f"{server.get('server_name', 'redis')} "
        f"{server.get('valkey_version') or server.get('redis_version')}, "
        f"{args.profiles:,} profiles x {args.events} events: {applied:,} deltas applied in {elapsed:.1f} s "
        f"({applied / elapsed:,.0f}/s, one client)"
    )
    print(
        f"Redis main thread: {cpu_seconds * 1e6 / applied:.1f} us CPU per delta "
        f"(of which {script_usec / applied:.1f} us wall time inside update.lua) "
        f"-> one Redis core applies at most ~{applied / cpu_seconds:,.0f} deltas/s"
    )
    print(f"keys: {keys_loaded:,} with markers, {keys_loaded - markers:,} without ({markers:,} markers)")
    print(f"used_memory: baseline {baseline:,} B, loaded {loaded:,} B, markers deleted {profiles_only:,} B")
    print(
        f"per profile, state only:          {per_profile:,.0f} B  "
        f"-> {per_profile * 1e6 / 2**30:.2f} GiB per million profiles"
    )
    print(f"per event marker (dedupe window): {per_marker:,.0f} B")
    print(
        f"per profile with its {args.events} markers:   {per_profile_with_markers:,.0f} B  -> "
        f"{per_profile_with_markers * 1e6 / 2**30:.2f} GiB per million profiles"
    )


if __name__ == "__main__":
    main()
