"""The local stack's KRaft cluster ids: what ``kafka-storage format -t ID`` accepts."""

from __future__ import annotations

import base64
import uuid

import pytest

from infra.stack import env


def test_an_id_that_would_start_with_a_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8: the first 6 bits are 62, base64url's "-"; argparse read such an id as an option.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x07" + bytes(15))])
    monkeypatch.setattr(env.uuid, "uuid4", lambda: next(draws))
    assert env._cluster_id() == base64.urlsafe_b64encode(b"\x07" + bytes(15)).decode().rstrip("=")


def test_ids_are_22_base64url_characters_of_16_bytes_never_led_by_a_dash() -> None:
    for _ in range(2000):
        cid = env._cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
