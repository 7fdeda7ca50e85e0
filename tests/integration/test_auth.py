"""API keys on real gunicorns: a keyed member behind a keyed gateway (which sends its member key), and the page
asking for the key once on a 401 and keeping it in sessionStorage."""
from __future__ import annotations

import requests

from tests.integration.conftest import MEMBERS
from tests.integration.test_ui import CHROMIUM, browser, grocery_photos, page, upload  # noqa: F401 - fixtures

MEMBER_KEY, CLIENT_KEY = "member-key-7c1d", "client-key-94be"


def test_keys_end_to_end(stack, start_service, jpeg, browser, grocery_photos):  # noqa: F811 - fixtures
    keyed = start_service("clip_logreg", API_KEYS=MEMBER_KEY)
    assert requests.post(keyed.url + "/", data=jpeg, timeout=60).status_code == 401
    urls = {**{name: stack.urls[name] for name in MEMBERS}, "clip_logreg": keyed.url}
    gateway = start_service("stacking", API_KEYS=CLIENT_KEY, GATEWAY_MEMBER_KEY=MEMBER_KEY,
                            MEMBER_URLS=",".join(f"{n}={u}" for n, u in urls.items()))
    assert requests.get(gateway.url + "/v2/health/ready", timeout=10).status_code == 200  # health stays open
    refused = requests.post(gateway.url + "/", data=jpeg, timeout=60)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    body = requests.post(gateway.url + "/", data=jpeg, headers={"X-API-Key": CLIENT_KEY}, timeout=60).json()
    assert body["degraded"] is False and body["members"]["clip_logreg"]["ok"] is True  # the member key was sent
    assert requests.get(gateway.url + "/v1/history", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                        timeout=10).status_code == 200
    assert CLIENT_KEY not in gateway.log_text() and MEMBER_KEY not in keyed.log_text()

    context = browser.new_context()
    pg = context.new_page()
    prompts = []

    def answer(dialog):
        prompts.append(dialog.message)
        dialog.accept(CLIENT_KEY)
    pg.on("dialog", answer)
    cards = upload(pg, gateway.url, grocery_photos[:1])
    assert prompts and cards[0].query_selector(".result-summary .label")  # asked, then answered
    assert pg.evaluate("sessionStorage.getItem('classifier-api-key')") == CLIENT_KEY
    pg.goto(gateway.url + "/history")  # a closed page: the key from sessionStorage, no second prompt
    pg.wait_for_selector("#history-table tbody tr", timeout=30_000)
    assert len(prompts) == 1
    context.close()
