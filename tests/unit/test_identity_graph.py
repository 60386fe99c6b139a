"""Identity beyond one level, the pure rules (streaming/profiles/identity_graph.py)."""

from __future__ import annotations

from streaming.profiles.identity_graph import IdNode, UserLink, linked_users, merge_users, resolve, user_links


def user(**links: tuple[int, str]) -> IdNode:
    return IdNode(True, links)


def test_links_at_the_same_time_are_taken_by_event_id_and_the_later_one_refused():
    nodes = {"x": user(y=(5, "e2"), z=(5, "e1")), "y": user(), "z": user()}
    resolution = resolve(nodes, max_ids=2)
    assert resolution.links == [UserLink("x", "z", 5, "e1", True), UserLink("x", "y", 5, "e2", False)]
    assert resolution.person_of == {"x": "x", "y": "y", "z": "x"}
    assert resolution.user_ids == {"x": ["x", "z"], "y": ["y"]}


def test_a_pair_linked_both_ways_counts_its_earliest_link_once():
    nodes = {"b": user(a=(9, "e9")), "a": user(b=(3, "e3"))}
    assert user_links(nodes) == [(3, "e3", "a", "b")]


def test_only_user_ids_link_people_and_an_anonymous_id_follows_its_earliest_owner():
    nodes = {
        "u": user(v=(1, "e1"), anon=(0, "e0")),
        "v": user(),
        "anon": IdNode(False, {}, ("v", "u")),  # v's link is the earlier one
        "lonely": IdNode(False, {}, ()),
    }
    resolution = resolve(nodes, max_ids=100)
    assert resolution.person_of == {"u": "u", "v": "u", "anon": "u", "lonely": "lonely"}
    assert [(link.a, link.b) for link in resolution.links] == [("u", "v")]


def test_the_canonical_id_is_the_smallest_whatever_links_came_first():
    canonical, _ = merge_users(["m", "b", "z"], [(1, "e1", "m", "z"), (2, "e2", "b", "m")], max_ids=10)
    assert canonical == dict.fromkeys("mbz", "b")


def test_linked_users_follow_chains_whatever_the_limit():
    nodes = {"a": user(b=(1, "e1")), "b": user(c=(2, "e2")), "c": user(), "d": user()}
    assert linked_users({"c"}, nodes) == {"a", "b", "c"}
