"""The shared no-secret assertion every receiver test uses."""

from __future__ import annotations

from collections.abc import Iterable


def assert_no_secret(text: str, secrets: Iterable[str]) -> None:
    """Fail when any secret (or its URL-quoted form) appears in ``text``, naming which one."""
    from urllib.parse import quote

    for secret in secrets:
        assert secret, "empty secret in the test's list"
        for form in {secret, quote(secret, safe="")}:
            assert form not in text, f"secret {secret[:3]}… leaked into: {text[:300]!r}"
