"""Image references read the way container tools read them."""

from __future__ import annotations

import pytest

from deploy.oci import ImageError
from deploy.oci.reference import Reference, is_loopback, parse_reference


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:5000/shop/orders:1.4", Reference("127.0.0.1:5000", "shop/orders", "1.4")),
    ("registry.example.internal/orders", Reference("registry.example.internal", "orders")),
    ("localhost/orders:dev", Reference("localhost", "orders", "dev")),
    ("[::1]:5000/orders:1", Reference("[::1]:5000", "orders", "1")),
    ("shop/orders:2.0", Reference(None, "shop/orders", "2.0")),
    ("host:5000/a/b@sha256:" + "a" * 64, Reference("host:5000", "a/b", None, "sha256:" + "a" * 64)),
])
def test_parse(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected
    assert str(parse_reference(text)) == text


@pytest.mark.parametrize(("text", "message"), [
    ("host:5000/Orders:1", "must be lowercase"),
    ("host:5000/orders:-bad", "tag '-bad'"),
    ("host:5000/orders@sha256:xyz", "64 hex digits"),
    ("host:5000/orders:", "tag ''"),
])
def test_mistakes(text: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_reference(text)


def test_loopback() -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.internal:5000")
