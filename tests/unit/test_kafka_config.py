"""Consumer tuning per app: long fetch waits where no one waits for a record, overridable."""

from __future__ import annotations

from core.kafka_config import APP_FETCH_WAIT_MS, consumer_tuning
from core.settings import LOCAL_CONSUMER_DEFAULTS, PulseSettings


def test_the_profile_app_reads_with_short_fetch_waits_and_the_archiver_with_long_ones():
    settings = PulseSettings()
    assert consumer_tuning(settings, "profile-app")["fetch.wait.max.ms"] == 5
    assert consumer_tuning(settings)["fetch.wait.max.ms"] == LOCAL_CONSUMER_DEFAULTS["fetch.wait.max.ms"]
    assert consumer_tuning(settings, "archiver")["fetch.wait.max.ms"] == APP_FETCH_WAIT_MS["archiver"] == 100
    assert consumer_tuning(settings, "relay")["fetch.wait.max.ms"] == 50
    assert (
        consumer_tuning(settings, "archiver")["session.timeout.ms"]
        == LOCAL_CONSUMER_DEFAULTS["session.timeout.ms"]
    )


def test_pulse_kafka_config_overrides_every_app_default():
    settings = PulseSettings(kafka_config={"fetch.wait.max.ms": 250, "session.timeout.ms": 30000})
    for app in (None, "profile-app", "archiver", "relay"):
        tuning = consumer_tuning(settings, app)
        assert tuning["fetch.wait.max.ms"] == 250 and tuning["session.timeout.ms"] == 30000


def test_the_embedded_broker_gets_a_shorter_session_and_keeps_the_per_app_fetch_waits(tmp_path):
    settings = PulseSettings(broker_hold_dir=tmp_path)
    archiver = consumer_tuning(settings, "archiver")
    assert archiver["session.timeout.ms"] == 2000 and archiver["fetch.wait.max.ms"] == 100
    assert consumer_tuning(settings, "profile-app")["fetch.wait.max.ms"] == 5
