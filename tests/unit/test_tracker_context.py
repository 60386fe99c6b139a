"""The tracker's page context and UTM parameters, run in Node.js with a minimal page (no browser).

Fails, never skips, without Node.js (as tests/integration/test_segment_sdks.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "node" / "tracker-context.cjs"


def _sent(url: str, *scenario: str) -> dict:
    done = subprocess.run(
        ["node", str(SCRIPT), url, *scenario], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def test_page_views_carry_page_context_and_every_event_the_utm_parameters():
    out = _sent("https://shop.example/shoes?utm_source=newsletter&utm_medium=email&utm_campaign=spring&x=1")
    page, cart = out["sent"]
    assert page["event_type"] == "page_view"
    assert page["metadata"] == {
        "url": "https://shop.example/shoes?utm_source=newsletter&utm_medium=email&utm_campaign=spring&x=1",
        "path": "/shoes",
        "referrer": "https://search.example/",
        "title": "Shoes",
        "category": "shoes",
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "spring",
    }
    # what the caller passes wins; the caller's object is not changed
    assert cart["metadata"] == {
        "product_id": "p1",
        "utm_source": "explicit",
        "utm_medium": "email",
        "utm_campaign": "spring",
    }
    assert out["untouched"] == {"category": "shoes"}


def test_without_utm_parameters_nothing_is_added():
    page, cart = _sent("https://shop.example/")["sent"]
    assert not any(k.startswith("utm_") for k in page["metadata"])
    assert cart["metadata"] == {"product_id": "p1", "utm_source": "explicit"}


def test_consent_is_recorded_announced_and_sent_with_every_later_event():
    out = _sent("https://shop.example/", "consent")
    page, cart, announced, click = out["sent"]
    assert "consent" not in page and "consent" not in cart
    granted = {"personalization": False, "analytics": True}
    assert announced["event_type"] == "consent_updated" and announced["consent"] == granted
    assert click["event_type"] == "click" and click["consent"] == granted
    assert out["consent"] == granted  # the refused call changed nothing
