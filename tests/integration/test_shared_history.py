"""Two real gateways (gunicorn, loopback) sharing one real PostgreSQL history: a record written through one is listed
and labelled through the other, and while the database is down predictions keep answering, reads and labels get a
503 with Retry-After, and the writer catches up when it returns, losing nothing it did not count."""
from __future__ import annotations

import re
import time
from typing import Iterator

import pytest
import requests

from tests.integration.conftest import Stack, jpeg_bytes, private_gateway, stop_all, wait_for_records
from tests.postgres import PostgresServer, find_bin_dir


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module's own: the tests stop and start it."""
    server = PostgresServer(find_bin_dir()).init()
    yield server
    server.destroy()


# The test server trusts loopback, so any password connects: this one is there to be looked for where it must not be.
PASSWORD = "never-shown-7f3a"


@pytest.fixture(scope="module")
def gateways(stack: Stack, database: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    url = database.create_database("shared").replace("postgres@", f"postgres:{PASSWORD}@")
    secret = tmp_path_factory.mktemp("secret") / "history-db"
    secret.write_text(url + "\n")  # one reads the URL from a file, as from a Docker or Kubernetes secret
    pair = [private_gateway(stack, tmp_path_factory.mktemp("a"), HISTORY_DB=url, HISTORY_RETRY_S="120"),
            private_gateway(stack, tmp_path_factory.mktemp("b"), HISTORY_DB_FILE=str(secret), HISTORY_RETRY_S="120")]
    yield pair
    stop_all(pair)


def _predict(url: str, i: int) -> dict:
    resp = requests.post(url + "/", data=jpeg_bytes(color=(i % 250, 90, 200 - i % 200)), timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _counter(url: str, name: str, **labels: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}{{{want}}} (\S+)$" if want else rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_record_written_through_one_gateway_is_listed_and_labelled_through_the_other(gateways) -> None:
    a, b = gateways
    answer = _predict(a.url, 1)
    items = wait_for_records(b.url, 1)
    mine = [item for item in items if item["request_id"] == answer["request_id"]]
    assert mine and mine[0]["label"] == answer["label"]
    labelled = requests.post(f"{b.url}/v1/history/{mine[0]['id']}/label", json={"label": answer["label"]}, timeout=10)
    assert labelled.status_code == 200, labelled.text
    quality = requests.get(a.url + "/v1/quality", timeout=30).json()
    assert quality["n"] >= 1  # a label given through b counts in a's live quality


def test_while_the_database_is_down_predictions_answer_and_nothing_is_lost_silently(gateways, database) -> None:
    a, b = gateways
    first = wait_for_records(a.url, 1)[0]
    record_id, classes = first["id"], sorted(first["probas"])
    assert requests.post(f"{a.url}/v1/history/{record_id}/label", json={"label": classes[0]},
                         timeout=10).status_code == 200
    before = len(wait_for_records(a.url, 10**6, timeout=0))
    dropped_before = sum(_counter(g.url, "history_record_failures_total", reason=r)
                         for g in gateways for r in ("storage_error", "queue_full"))
    database.stop("immediate")  # a crash: the label above was acknowledged, so it must survive
    try:
        answered = 0
        for i in range(12):
            _predict((a, b)[i % 2].url, 100 + i)  # every prediction answers: recording is off the answer path
            answered += 1
        for url in (a.url, b.url):
            listed = requests.get(url + "/v1/history", timeout=30)
            assert listed.status_code == 503 and listed.headers["Retry-After"] == "5", listed.text
            assert "cannot be read" in listed.json()["error"]["message"] and PASSWORD not in listed.text
        refused = requests.post(f"{b.url}/v1/history/{record_id}/label", json={"label": classes[1]}, timeout=30)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5" and PASSWORD not in refused.text
        assert _counter(a.url, "history_write_errors_total") > 0
        assert PASSWORD not in requests.get(a.url + "/history", timeout=30).text  # the page shows the last error
    finally:
        database.start()
    deadline = time.monotonic() + 60
    while True:  # the writers retry with backoff (at most 5 s apart) and catch up
        items = wait_for_records(a.url, 10**6, timeout=0)
        if len(items) >= before + answered or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    dropped = sum(_counter(g.url, "history_record_failures_total", reason=r)
                  for g in gateways for r in ("storage_error", "queue_full")) - dropped_before
    assert len(items) == before + answered - dropped and dropped == 0
    kept = requests.get(f"{a.url}/v1/history/{record_id}", timeout=10).json()
    assert kept["true_label"] == classes[0]  # acknowledged before the crash, still there after it
    for gateway in gateways:  # what the database refused was logged, the password never
        assert "refused" in gateway.log_text() and PASSWORD not in gateway.log_text()
        assert PASSWORD not in requests.get(gateway.url + "/metrics", timeout=10).text
