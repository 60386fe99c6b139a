"""Profile-app throughput with 50 rules and intent scoring on, against the same app without them.

Same topic, same process, runs interleaved (off, on, python, off, on, python, ...) so machine
noise hits all three: "on" is the profile app as shipped (the update script's prefilter names
the rules that may fire, Python evaluates those), "python" the same rules and model with the
prefilter off (``PULSE_RULES_PREFILTER=false``: Python evaluates every triggering event).
The rule set is the shipped sample plus generated rules over every event type (category
affinities with different thresholds, cart, purchase, search and engagement rules), with
cooldowns and caps as personalization rules have them; the intent model is a fixed logistic
model published to Redis. Every event type triggers some rule, so every event is evaluated.
Each trial also prints the CPU per event of the app, Redis and the broker (``/proc``, over the
window the rate counts) and the update function's time per event (``INFO commandstats``).

Usage: .venv/bin/python -m bench.personalization_overhead [--events 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import redis

from bench.profile_app_throughput import pulse
from bench.stack import demo_events, distinct_valid, fill_topic, local_stack
from enrichment.catalog import SAMPLE_CATALOG, read_catalog_csv
from enrichment.reference_store import CATALOG, publish_reference
from streaming.profiles.intent import IntentModel
from streaming.profiles.intent_store import MODEL_POINTER, publish_intent_model
from streaming.rules.follower import DEFAULT_RULES_FILE
from streaming.rules.loader import load_rules

MODEL = IntentModel(-3.0, (0.2, 0.3, 1.1, -0.5, 0.1, 0.1, 0.2), {"note": 0.0})


def fifty_rules(categories: list[str]) -> str:
    """The sample rules plus generated ones: 50 in all, spread over event types."""
    lines = [DEFAULT_RULES_FILE.read_text().rstrip(), ""]
    n = 4
    for i, category in enumerate(categories[:16]):
        lines += [
            f"  - id: likes_{i}",
            "    on: [page_view]",
            (
                f'    when: \'event.category == "{category}" && '
                f'profile.category_views["{category}"] >= {4 + i % 4}\''
            ),
            "    action: {type: banner, message: 'More " + category.replace("'", "") + "'}",
            "    cooldown: 2h",
            "    max_fires: 1",
        ]
        n += 1
    templates = [
        ("page_view", "profile.event_count >= {k} * 25 && profile.session_count >= 2", "offer"),
        ("add_to_cart", "profile.cart.size() >= {k} + 2 && profile.purchase_total < 50.0", "offer"),
        ("purchase", "profile.purchase_total >= {k}.0 * 300.0", "segment"),
        (
            "search",
            '"search" in profile.counts_by_type && profile.counts_by_type["search"] >= {k} + 3',
            "banner",
        ),
        ("click", "profile.engagement_score >= {k} * 60 && profile.intent_score > 0.5", "banner"),
        (
            "remove_from_cart",
            (
                '"remove_from_cart" in profile.counts_by_type && '
                'profile.counts_by_type["remove_from_cart"] >= {k} + 2'
            ),
            "offer",
        ),
    ]
    k = 1
    while n < 50:
        for event_type, condition, action in templates:
            if n >= 50:
                break
            extra = f"segment: seg_{n}" if action == "segment" else "message: 'rule " + str(n) + "'"
            lines += [
                f"  - id: rule_{n}",
                f"    on: [{event_type}]",
                f"    when: '{condition.format(k=k)}'",
                f"    action: {{type: {action}, {extra}}}",
                "    cooldown: 6h",
                "    max_fires: 2",
            ]
            n += 1
        k += 1
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    events = demo_events(args.events, args.users)
    distinct = distinct_valid(events)
    rows = read_catalog_csv(SAMPLE_CATALOG)
    rules_file = Path(tempfile.mkdtemp()) / "rules.yaml"
    rules_file.write_text(fifty_rules(sorted({r["category"] for r in rows})))
    ruleset = load_rules(rules_file)
    assert len(ruleset) == 50, len(ruleset)
    empty_rules = rules_file.with_name("empty.yaml")
    empty_rules.write_text("rules: []\n")

    with local_stack() as settings:
        client = redis.Redis.from_url(settings.redis_url)
        fill_topic(settings, events)
        print(
            f"topic filled with {len(events)} events ({len(distinct)} distinct valid), "
            f"{args.users} users; {len(ruleset)} rules"
        )
        rates: dict[str, list[float]] = {"off": [], "on": [], "python": []}
        fired: dict[str, list[int]] = {"on": [], "python": []}
        cpu: dict[str, list[dict[str, float]]] = {"off": [], "on": [], "python": []}
        for trial in range(args.repeat):
            for mode in ("off", "on", "python"):
                client.flushdb()
                publish_reference(client, CATALOG, rows, "product_id")
                if mode != "off":
                    publish_intent_model(client, MODEL)
                else:
                    client.delete(MODEL_POINTER)
                trial_settings = settings.model_copy(
                    update={
                        "consumer_group": f"{settings.consumer_group}-{mode}-{trial}",
                        "rules_file": empty_rules if mode == "off" else rules_file,
                        "rules_prefilter": mode != "python",
                    }
                )
                client.config_resetstat()
                window: dict[str, dict[str, float]] = {}
                rate, sink = pulse(trial_settings, args.events, len(distinct), return_sink=True, cpu=window)
                rates[mode].append(rate)
                # CPU per event of each process over the window the rate counts, and the
                # update function's time per event inside Redis (commandstats: FCALL, whole run).
                fcall = client.info("commandstats").get("cmdstat_fcall", {})
                cpu[mode].append(
                    {
                        **{
                            name: (window["done"].get(name, 0.0) - window["first"].get(name, 0.0))
                            / window["events"]["counted"]
                            * 1e6
                            for name in ("app", "redis", "broker")
                        },
                        "fcall": int(fcall.get("usec", 0)) / args.events,
                    }
                )
                if mode != "off":
                    fired[mode].append(sink.decisions_fired)
                    scored = sum(
                        1
                        for key in client.scan_iter("pulse:{*}:p", count=5000)
                        if client.hexists(key, "intent_score")
                    )
                used = cpu[mode][-1]
                print(
                    f"trial {trial} {mode:>6}: {rate:,.0f} events/s"
                    + f"  (CPU us/event: app {used['app']:.1f}, redis {used['redis']:.1f}, "
                    + f"broker {used['broker']:.1f}; FCALL {used['fcall']:.1f})"
                    + (
                        f"  ({sink.decisions_fired} decisions, {scored} profiles scored)"
                        if mode != "off"
                        else ""
                    )
                )
    off, on, python = (statistics.median(rates[mode]) for mode in ("off", "on", "python"))
    print(f"\nwithout rules/intent (median): {off:,.0f} events/s")
    print(
        f"with 50 rules + intent (median): {on:,.0f} events/s  "
        f"({statistics.median(fired['on']):,.0f} decisions per run)"
    )
    print(
        f"same, prefilter off (median): {python:,.0f} events/s  "
        f"({statistics.median(fired['python']):,.0f} decisions per run)"
    )
    print(f"ratio on/off = {on / off:.2f}  (target >= 0.65); prefilter off: {python / off:.2f}")
    for mode in ("off", "on", "python"):
        print(
            f"CPU us/event, {mode} (median): "
            + ", ".join(
                f"{name} {statistics.median(c[name] for c in cpu[mode]):.1f}"
                for name in ("app", "redis", "broker", "fcall")
            )
        )
    # Each trial runs the modes back to back, so its own ratio is the least exposed to the
    # machine's drift between trials.
    paired = [on_rate / off_rate for on_rate, off_rate in zip(rates["on"], rates["off"], strict=True)]
    print(
        "ratio on/off per trial: "
        + ", ".join(f"{r:.2f}" for r in paired)
        + f"  (median {statistics.median(paired):.2f})"
    )


if __name__ == "__main__":
    main()
