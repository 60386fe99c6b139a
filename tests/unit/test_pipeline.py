"""The profile app's pure record check."""

import json

from enrichment.catalog import Catalog
from streaming.profile_app.pipeline import check_record
from tests.unit.test_event_contract import event


def test_check_record_enriches_from_the_catalog():
    raw = json.dumps(event(metadata={"product_id": "p9"})).encode()
    checked = check_record(raw, Catalog("v1", {"p9": "books"}))
    assert checked.error is None
    assert checked.delta.category == "books"


def test_check_record_never_raises_on_garbage():
    for raw in (None, b"", b"\x00\xff", b"{}", b"[" * 5000):
        checked = check_record(raw, Catalog())
        assert checked.delta is None and checked.error
