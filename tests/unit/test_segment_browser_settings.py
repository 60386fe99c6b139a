"""The settings document for Segment's browser library, and which paths get CORS (pure)."""

import pytest

from streaming.api.browser import is_collector_path
from streaming.api.segment_settings import SegmentApiUrlError, browser_settings, split_api_url


def test_api_url_splits_into_analytics_next_protocol_and_api_host():
    assert split_api_url("https://pulse.example.com/v1") == ("https", "pulse.example.com/v1")
    assert split_api_url("http://127.0.0.1:8080/v1/") == ("http", "127.0.0.1:8080/v1")
    assert split_api_url("https://example.com/pulse/v1") == ("https", "example.com/pulse/v1")
    for bad in ("pulse.example.com/v1", "ftp://x/v1", "https:///v1", "https://x/v1?a=1"):
        with pytest.raises(SegmentApiUrlError, match="PULSE_SEGMENT_API_URL"):
            split_api_url(bad)


def test_settings_make_pulse_the_only_destination():
    doc = browser_settings("wk-1", "http://127.0.0.1:8080/v1")
    # One integration only: a second one makes analytics-next load destinations from Segment's CDN.
    assert list(doc["integrations"]) == ["Segment.io"]
    segment_io = doc["integrations"]["Segment.io"]
    assert (segment_io["apiKey"], segment_io["apiHost"], segment_io["protocol"]) == (
        "wk-1",
        "127.0.0.1:8080/v1",
        "http",
    )
    # Nothing that would load a bundle from the CDN, and no remote metrics to a route Pulse lacks.
    assert doc["remotePlugins"] == [] and doc["enabledMiddleware"] == {}
    assert doc["middlewareSettings"].get("routingRules", []) == []
    assert doc["legacyVideoPluginsEnabled"] is False
    assert doc["metrics"]["sampleRate"] == 0


def test_cors_covers_the_browser_library_routes_and_settings_only():
    for path in ("/v1/t", "/v1/p", "/v1/i", "/v1/a", "/v1/g", "/v1/s", "/v1/b", "/v1/group"):
        assert is_collector_path(path), path
    assert is_collector_path("/v1/projects/wk-1/settings")
    for path in (
        "/v1/projects//settings",
        "/v1/projects/settings",
        "/v1/projects/a/b/settings",
        "/v1/profiles/u1",
        "/v1/decisions/u1",
        "/v1/x",
    ):
        assert not is_collector_path(path), path


def test_settings_endpoint_sends_to_the_configured_url_and_a_bad_one_stops_start_up():
    from fastapi.testclient import TestClient

    from core.settings import PulseSettings
    from streaming.api.app import create_app

    settings = PulseSettings(
        write_keys=["w"], read_keys=["r"], segment_api_url="https://pulse.example.com/v1"
    )
    client = TestClient(create_app(settings))  # no lifespan: the settings need no broker or Redis
    segment_io = client.get("/v1/projects/w/settings").json()["integrations"]["Segment.io"]
    assert (segment_io["apiHost"], segment_io["protocol"]) == ("pulse.example.com/v1", "https")
    assert client.get("/v1/projects/r/settings").status_code == 404
    with pytest.raises(SegmentApiUrlError):
        create_app(settings.model_copy(update={"segment_api_url": "pulse.example.com/v1"}))
