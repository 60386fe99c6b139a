"""What a rebuild touches: marker keys and patterns, people and their parts (pure)."""

from __future__ import annotations

import fnmatch

from streaming.profiles.keys import profile_keys
from streaming.profiles.rebuild_plan import (
    ALL_MARKERS_PATTERN,
    Link,
    marker_pattern,
    marker_profile,
    part_version,
    people_of,
    people_parts,
)


def _glob(pattern: str, key: str) -> bool:
    """Redis MATCH semantics for these patterns: fnmatch with backslash escapes as [x] classes."""
    translated, i = "", 0
    while i < len(pattern):
        if pattern[i] == "\\":
            translated += f"[{pattern[i + 1]}]"
            i += 2
        else:
            translated += pattern[i]
            i += 1
    return fnmatch.fnmatchcase(key, translated)


def test_marker_keys_name_their_profile_whatever_the_id():
    for profile_id in ("u1", "a{b}c", "50%", "x:seen:y", "star*?[x]\\"):
        key = f"{profile_keys(profile_id).seen_prefix}0f1e"
        assert marker_profile(key) == profile_id
        assert _glob(marker_pattern(profile_id), key)
        assert _glob(ALL_MARKERS_PATTERN, key)
    assert not _glob(marker_pattern("u*"), f"{profile_keys('u1').seen_prefix}e")
    assert marker_profile(profile_keys("u1").fields) is None
    assert marker_profile("other:{u1}:seen:e") is None


def test_part_version_tells_absent_from_present():
    assert part_version(None, None) == ":"
    assert part_version("3", "1700") == "3:1700"
    assert part_version("3", "1700") != part_version("3", "1701")


def test_an_anonymous_id_belongs_to_its_live_owner_else_the_earliest_archived_link():
    links = [Link("u2", "a1", 200), Link("u1", "a1", 200), Link("u3", "a1", 300), Link("u9", "a2", 50)]
    # Redis knows a1's owner: that wins.
    assert people_of(["a1"], {"a1": "u3"}, set(), links) == {"a1": "u3"}
    # Redis lost it: earliest link, ties by user id (u1 < u2), as the stream decides.
    assert people_of(["a1"], {"a1": "a1"}, set(), links) == {"a1": "u1"}
    # An id with events as a user id is its own person, whatever links name it.
    assert people_of(["a2"], {}, {"a2"}, links) == {"a2": "a2"}
    # Unknown everywhere: itself.
    assert people_of(["z"], {}, set(), links) == {"z": "z"}


def test_a_person_is_rebuilt_with_every_anonymous_id_linked_in_the_archive_or_live():
    links = [Link("u1", "a1", 1), Link("u1", "a2", 5), Link("u2", "a3", 1)]
    parts = people_parts(["u1", "u2"], links, {"u1": {"a4", "u1"}, "u2": set()})
    assert parts == {"u1": ["u1", "a1", "a2", "a4"], "u2": ["u2", "a3"]}
    assert people_parts(["solo"], [], {}) == {"solo": ["solo"]}
