"""The generic wrapping: reading vendor objects, patching and restoring methods, views rebuilt."""

from __future__ import annotations

import functools
from collections import OrderedDict
from types import MappingProxyType
from types import SimpleNamespace as NS
from typing import Any

import pytest

from watcher.instrument.wrap import WRAPPED_MARK, get, patch, rebuild_variants, unpatch
from watcher.instrument.wrap_openai import chat_spec


@pytest.mark.parametrize(
    ("obj", "path", "expected"),
    [
        ({"a": {"b": 2}}, ("a", "b"), 2),
        (NS(a=NS(b=1)), ("a", "b"), 1),
        (NS(a={"b": 3}), ("a", "b"), 3),
        (MappingProxyType({"items": 3}), ("items",), 3),  # a mapping's key, not its method
        (OrderedDict(values=4), ("values",), 4),
        (NS(), ("missing",), None),
        (MappingProxyType({}), ("missing",), None),
        (None, ("a",), None),
        (NS(a=None), ("a", "b"), None),
    ],
)
def test_get_reads_attributes_and_keys(obj: Any, path: tuple[str, ...], expected: Any) -> None:
    assert get(obj, *path) == expected


class Resource:
    def create(self, **kwargs: Any) -> str:
        return "class method"


def test_patch_restores_a_vendors_instance_attribute_and_skips_wrappers_of_ours() -> None:
    res = Resource()
    vendor = lambda **kw: "instance attribute"  # noqa: E731 - set in __init__ by SDK views
    res.create = vendor  # type: ignore[method-assign]
    assert patch(res, "create", chat_spec())
    assert res.create is not vendor and not patch(res, "create", chat_spec())  # idempotent
    assert unpatch(res, "create") and res.create is vendor  # put back, not deleted
    other = Resource()
    assert patch(other, "create", chat_spec()) and unpatch(other, "create")
    assert other.create() == "class method" and "create" not in vars(other)

    # A vendor wrapper built around ours (functools.wraps copies our marks) is neither wrapped
    # again nor "restored" by unpatch.
    inner = Resource()
    patch(inner, "create", chat_spec())
    view = NS(create=functools.wraps(inner.create)(lambda **kw: inner.create(**kw)))
    assert hasattr(view.create, WRAPPED_MARK)
    assert not patch(view, "create", chat_spec()) and not unpatch(view, "create")


def test_rebuild_variants_drops_cached_views_only() -> None:
    res = NS(with_raw_response="cached view", create="kept")
    rebuild_variants(res, ("with_raw_response", "with_streaming_response"))
    assert vars(res) == {"create": "kept"}
