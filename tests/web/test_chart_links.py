"""Signed chart links: Slack fetches an alert's chart while reads need ``server.read_token``.

A real daemon and a real uvicorn server on loopback; the link comes out of the real Slack receiver,
posted to a loopback HTTP receiver, and is fetched with a plain HTTP client that has no token.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from tests.httpreceiver import HTTPReceiver
from tests.web.incident import END, READ_TOKEN, Incident, make_incident
from watcher.config import ReceiverSettings
from watcher.core import Alert, NotificationKind
from watcher.notify.receivers import build_receiver
from watcher.notify.templates import render_notification
from watcher.signing import Check, check, derive_key, sign
from watcher.web.app import ServerThread, build_app

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Incident, str]]:
    inc = make_incident(tmp_path_factory.mktemp("links"), read_token=True)
    srv = ServerThread(build_app(inc.daemon), "127.0.0.1", 0).start()
    try:
        yield inc, f"http://127.0.0.1:{srv.port}"
    finally:
        srv.stop()
        inc.daemon.close()


def _alert(inc: Incident) -> Alert:
    fp = inc.fingerprint("ErrorRateHigh", tenant="acme")
    return next(a for ev in inc.daemon.evaluators.values() for a in ev.alerts() if a.fingerprint == fp)


def _slack_image(inc: Incident, base: str, alert: Alert) -> str:
    """Send the alert through the real Slack receiver; return the image URL it posted."""
    with HTTPReceiver() as hook:
        settings = inc.daemon.settings.model_copy(update={"public_url": base})
        rs = ReceiverSettings(type="slack", url=SecretStr(hook.url + "/services/T/B/x"))
        n = render_notification(
            alert,
            kind=NotificationKind.FIRING,
            receiver="slack",
            settings=settings,
            rule_url=base + "/rules/x",
        )
        build_receiver("slack", rs, settings).send(n)
        ((_, _, doc),) = hook.requests
    (image,) = [b["image_url"] for b in doc["blocks"] if b["type"] == "image"]
    return str(image)


def test_the_slack_chart_link_is_signed_and_needs_no_token(served: tuple[Incident, str]) -> None:
    inc, base = served
    alert = _alert(inc)
    url = _slack_image(inc, base, alert)
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path == f"/chart/alert/{alert.fingerprint}.png" and set(q) == {"exp", "sig"}
    assert READ_TOKEN not in url and derive_key(READ_TOKEN).hex() not in url
    assert alert.last_eval is not None
    assert int(q["exp"]) == int((alert.last_eval + timedelta(days=7)).timestamp())  # server.chart_url_ttl
    got = httpx.get(url)  # no Authorization header: what Slack's image fetcher does
    assert got.status_code == 200 and got.content.startswith(PNG)
    # without the signature the chart still needs the read token
    assert httpx.get(base + parts.path).status_code == 401
    assert httpx.get(base + parts.path, headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200


def test_forged_and_expired_links_are_refused(served: tuple[Incident, str]) -> None:
    inc, base = served
    alert = _alert(inc)
    path = f"/chart/alert/{alert.fingerprint}.png"
    key = derive_key(READ_TOKEN)
    good = sign(key, path, END, timedelta(hours=1))
    assert httpx.get(f"{base}{path}?{good}").status_code == 200
    q = parse_qs(good)
    exp, sig = q["exp"][0], q["sig"][0]
    other = inc.fingerprint("LatencyHigh", tenant="acme")
    forged = {
        "another key": sign(derive_key("not-the-read-token"), path, END, timedelta(hours=1)),
        "another alert's signature": sign(key, f"/chart/alert/{other}.png", END, timedelta(hours=1)),
        "a later expiry": f"exp={int(exp) + 3600}&sig={sig}",
        "a flipped digit": f"exp={exp}&sig={sig[:-1]}{'0' if sig[-1] != '0' else '1'}",
        "no signature": f"exp={exp}",
        "garbage": "exp=soon&sig=" + "z" * 64,
    }
    for why, query in forged.items():
        r = httpx.get(f"{base}{path}?{query}")
        assert r.status_code == 403, why
        assert "no valid signature" in r.json()["detail"], why
    # expired: signed a day before the daemon's clock, valid for an hour
    stale = sign(key, path, END - timedelta(days=1), timedelta(hours=1))
    r = httpx.get(f"{base}{path}?{stale}")
    assert r.status_code == 403 and "expired" in r.json()["detail"]
    metrics = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {READ_TOKEN}"}).text
    assert 'reason="chart_link_expired"' in metrics and 'reason="chart_link_forged"' in metrics


def test_check_is_a_pure_function_of_its_arguments() -> None:
    key = derive_key("s3cret")
    q = parse_qs(sign(key, "/p", END, timedelta(minutes=5)))
    exp, sig = q["exp"][0], q["sig"][0]
    assert check(key, "/p", exp, sig, END) is Check.OK
    assert check(key, "/p", exp, sig, END + timedelta(minutes=5)) is Check.EXPIRED
    assert check(key, "/q", exp, sig, END) is Check.FORGED
    assert check(key, "/p", exp, sig.upper(), END) is Check.OK  # hex is case-insensitive
    assert check(key, "/p", None, sig, END) is Check.FORGED
    assert derive_key("s3cret") != derive_key("s3cret2") and b"s3cret" not in derive_key("s3cret")
