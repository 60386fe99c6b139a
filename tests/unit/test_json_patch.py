import pytest

from core.json_patch import JsonPatchError, apply_patch, check_patch


def test_add_remove_replace_on_objects_and_arrays():
    doc = {"a": {"b": 1}, "list": [1, 2], "x/y": 0, "t~": 1}
    patched = apply_patch(
        doc,
        [
            {"op": "add", "path": "/a/c", "value": {"d": [1]}},
            {"op": "remove", "path": "/a/b"},
            {"op": "replace", "path": "/list/0", "value": 9},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "add", "path": "/list/1", "value": 5},
            {"op": "replace", "path": "/x~1y", "value": 1},
            {"op": "remove", "path": "/t~0"},
        ],
    )
    assert patched == {"a": {"c": {"d": [1]}}, "list": [9, 5, 2, 3], "x/y": 1}
    assert doc == {"a": {"b": 1}, "list": [1, 2], "x/y": 0, "t~": 1}  # the input is untouched


def test_move_copy_test_and_whole_document():
    doc = {"userId": "u1", "n": 1}
    assert apply_patch(doc, [{"op": "move", "from": "/userId", "path": "/user_id"}]) == {
        "user_id": "u1",
        "n": 1,
    }
    assert apply_patch(doc, [{"op": "copy", "from": "/n", "path": "/m"}]) == {"userId": "u1", "n": 1, "m": 1}
    assert apply_patch(doc, [{"op": "test", "path": "/n", "value": 1}]) == doc
    assert apply_patch(doc, [{"op": "replace", "path": "", "value": [1]}]) == [1]


@pytest.mark.parametrize(
    "patch, message",
    [
        ([{"op": "replace", "path": "/missing", "value": 1}], "no member 'missing'"),
        ([{"op": "remove", "path": "/list/2"}], "out of range"),
        ([{"op": "add", "path": "/list/01", "value": 1}], "not an array index"),
        ([{"op": "test", "path": "/list/0", "value": 2}], "test failed"),
        ([{"op": "add", "path": "/n/x", "value": 1}], "cannot add to a int"),
        ([{"op": "add", "path": "n", "value": 1}], "is not a JSON pointer"),
    ],
)
def test_a_patch_that_does_not_apply_says_where(patch, message):
    with pytest.raises(JsonPatchError, match=message):
        apply_patch({"list": [1], "n": 1}, patch)


@pytest.mark.parametrize(
    "patch",
    [
        {},
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "add", "path": "/a"}],
        [{"op": "move", "path": "/a"}],
        [1],
    ],
)
def test_malformed_patches_are_refused(patch):
    with pytest.raises(JsonPatchError):
        check_patch(patch)


def test_all_or_nothing():
    doc = {"a": 1}
    with pytest.raises(JsonPatchError, match="operation 1"):
        apply_patch(doc, [{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/zz"}])
    assert doc == {"a": 1}
