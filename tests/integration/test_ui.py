"""The pages in a real headless Chromium (Debian's /usr/bin/chromium via Playwright) against real gunicorns.

Screenshots go to test-artifacts/ (git-ignored) so a person can look at the page at desktop and phone width.
"""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Iterator

import pytest
import requests
from PIL import Image

from shared.config import Settings
from tests.integration.conftest import wait_for_records

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
RESULT_TIMEOUT_MS = 60_000  # the members run tiny CLIP and EasyOCR on a shared 2-core machine

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed: run `make system-deps`")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Never a downloaded browser: the Debian package, with no sandbox because tests may run as root.
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=DESKTOP)
    pg = context.new_page()
    pg.console_errors = []
    pg.on("pageerror", lambda exc: pg.console_errors.append(str(exc)))
    yield pg
    context.close()


@pytest.fixture(scope="module")
def grocery_photos() -> list[Path]:
    """Two real grocery photos from the shared datasets (path from Settings, never copied into the repo)."""
    root = Path(Settings.from_env().datasets_dir) / "grocery" / "train"
    photos = sorted(root.glob("*/*/*.jpg"))
    if not photos:
        pytest.skip(f"no grocery photos under {root}")
    return [photos[0], photos[len(photos) // 2]]


def shot(page, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def upload(page, base_url: str, files: list[Path]) -> list:
    """Open the page, choose the files with the picker, wait until every card has an answer."""
    page.goto(base_url + "/")
    page.set_input_files("#file-input", [str(f) for f in files])
    return wait_for_cards(page, len(files))


def wait_for_cards(page, n: int) -> list:
    page.wait_for_function(
        "n => document.querySelectorAll('#results .result').length >= n"
        " && !document.querySelector('#results .result.is-pending')", arg=n, timeout=RESULT_TIMEOUT_MS)
    return page.query_selector_all("#results .result")


def card_text(card) -> str:
    return " ".join(card.inner_text().split())


def classes_of(base_url: str) -> list[str]:
    return requests.get(base_url + "/v2/models/stacking", timeout=10).json()["parameters"]["classes"]


def history_request_ids(page) -> list[str]:
    return page.eval_on_selector_all("#history-table tbody tr", "rows => rows.map(r => r.dataset.requestId)")


# --- the try-it page -------------------------------------------------------------
def test_uploading_real_photos_shows_the_results(page, stack, grocery_photos):
    cards = upload(page, stack.gateway_url, grocery_photos)
    classes = classes_of(stack.gateway_url)
    for card in cards:
        label = card.query_selector(".result-summary .label").inner_text()
        assert label in classes
        text = card_text(card)
        assert re.search(r"\d+\.\d%", text) and " ms" in text  # probability and latency
        # The test weights are real EasyOCR + synthetic CLIP: the notice names each part, never "all synthetic".
        notice = card.query_selector(".notice-synthetic").inner_text()
        assert notice.startswith("CLIP: synthetic weights · OCR: real.") and "CLIP runs on randomly" in notice
        assert "OCR: synthetic" not in text
        assert card.get_attribute("data-request-id")
        # a bar per class, with every member side by side
        assert len(card.query_selector_all("table.probas tbody tr")) == len(classes)
        headers = [h.inner_text() for h in card.query_selector_all("table.probas thead th")]
        assert any("clip_svm" in h for h in headers) and any("ocr_nb" in h for h in headers)
        assert card.eval_on_selector(".result-preview", "img => img.complete && img.naturalWidth > 0")
    assert page.get_attribute("#results", "aria-live") == "polite"
    assert page.console_errors == []
    shot(page, "ui-classify-desktop")
    page.set_viewport_size(PHONE)
    shot(page, "ui-classify-phone")
    # Nothing sticks out sideways on a phone: the page scrolls only down.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_bad_files_are_explained_in_words(page, stack, tmp_path):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("this is not a photo")
    fake_jpeg = tmp_path / "broken.jpg"
    fake_jpeg.write_bytes(b"\xff\xd8\xff\xe0 these are not the bytes of a JPEG" * 20)
    too_big = tmp_path / "huge.png"
    too_big.write_bytes(b"\x89PNG" + b"\0" * (3 * 1024 * 1024))  # over the tests' 2 MB limit
    cards = upload(page, stack.gateway_url, [not_image, fake_jpeg, too_big])
    texts = {card.query_selector(".result-name").inner_text(): card_text(card) for card in cards}
    assert "Unsupported file." in texts["notes.txt"] and "choose a JPEG, PNG" in texts["notes.txt"]
    assert "Not classified" in texts["broken.jpg"]
    assert re.search(r"(Unsupported file|could not be read)\.", texts["broken.jpg"])  # the server's verdict
    assert "File too large." in texts["huge.png"] and "the limit is 2.0 MB" in texts["huge.png"]
    assert all(card.query_selector("[role=alert]") for card in cards)
    shot(page, "ui-errors-desktop")


def test_drop_paste_and_draw_classify_too(page, stack, grocery_photos):
    page.goto(stack.gateway_url + "/")
    data = list(grocery_photos[0].read_bytes())
    # What the browser hands the page for a drop and for a paste: a DataTransfer holding the file.
    page.evaluate("""bytes => {
        const make = name => { const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, {type: 'image/jpeg'})); return dt; };
        document.getElementById('dropzone').dispatchEvent(
            new DragEvent('drop', {dataTransfer: make('dropped.jpg'), bubbles: true, cancelable: true}));
        document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: make('pasted.jpg'), bubbles: true}));
    }""", data)
    wait_for_cards(page, 2)
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 200, steps=12)
    page.mouse.up()
    page.click("#classify-drawing")
    cards = wait_for_cards(page, 3)
    names = [c.query_selector(".result-name").inner_text() for c in cards]
    assert names[0].startswith("drawing-") and {"dropped.jpg", "pasted.jpg"} <= set(names)
    assert all(c.query_selector(".result-summary .label") for c in cards), [card_text(c) for c in cards]
    rid = cards[0].get_attribute("data-request-id")
    items = requests.get(stack.gateway_url + "/v1/history?limit=20", timeout=10).json()["items"]
    drawing = next(i for i in items if i["request_id"] == rid)
    assert drawing["source"] == "ui" and drawing["has_thumbnail"]
    shot(page, "ui-draw-desktop", full_page=False)
    page.click("#clear")
    assert page.evaluate("""() => { const c = document.getElementById('pad');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return d.every(v => v === 255); }""")  # white paper again


def test_keyboard_reaches_the_file_picker_with_a_visible_focus(page, stack):
    page.goto(stack.gateway_url + "/")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "file-input":
            break
    assert page.evaluate("document.activeElement.id") == "file-input"
    outline = page.eval_on_selector("label[for=file-input]", "l => getComputedStyle(l).outlineStyle")
    assert outline == "solid"


# --- history ---------------------------------------------------------------------
def test_history_page_shows_the_uploaded_photo(page, stack, grocery_photos):
    card = upload(page, stack.gateway_url, grocery_photos[:1])[0]
    rid = card.get_attribute("data-request-id")
    label = card.query_selector(".result-summary .label").inner_text()
    page.goto(stack.gateway_url + "/history")
    assert rid in history_request_ids(page)
    row = page.locator(f'tr[data-request-id="{rid}"]')
    assert label in row.inner_text() and "via ui" in row.inner_text()
    assert row.locator(".badge-synthetic").inner_text() == "CLIP: synthetic weights · OCR: real"
    assert row.locator("img.thumb").evaluate("img => img.complete && img.naturalWidth > 0")
    thumb = requests.get(stack.gateway_url + row.locator("img.thumb").get_attribute("src"), timeout=10)
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 96
    page.select_option("#f-label", label)
    page.click("button[type=submit]")
    assert set(page.eval_on_selector_all("#history-table .label", "els => els.map(e => e.textContent)")) == {label}
    page.goto(stack.gateway_url + "/history")
    shot(page, "ui-history-desktop", full_page=False)
    page.set_viewport_size(PHONE)
    shot(page, "ui-history-phone", full_page=False)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_moderator_corrects_a_prediction_on_the_history_page_and_the_review_queue(page, stack, start_service,
                                                                                   grocery_photos):
    """Label through the page's controls in Chromium; the API then reports the label, the review queue drops it,
    and the Quality page scores it."""
    gateway = start_service("stacking", MEMBER_URLS=stack.member_urls())
    cards = upload(page, gateway.url, grocery_photos)
    rids = [card.get_attribute("data-request-id") for card in cards]
    wait_for_records(gateway.url, len(rids))  # the history writes in the background
    page.goto(gateway.url + "/history")
    row = page.locator(f'tr[data-request-id="{rids[0]}"]')
    answered = row.locator(".label").inner_text()
    other = next(o for o in row.locator("select option").all_inner_texts() if o != answered)
    row.locator("select").select_option(other)
    row.locator(".label-form button").click()
    row.locator(".label-status .badge").wait_for()
    assert row.locator(".label-status").inner_text().startswith(f"was wrong: {other}")
    record = requests.get(gateway.url + "/v1/history", params={"reviewed": "wrong"}, timeout=10).json()["items"]
    assert [(r["request_id"], r["true_label"], r["labelled_by"]) for r in record] == [(rids[0], other, "anonymous")]
    shot(page, "ui-history-labelled", full_page=False)

    page.goto(gateway.url + "/review")
    items = page.locator("#review-list .review-item")
    assert items.count() == 1  # the labelled one has left the queue
    items.first.locator(".label-form button").click()  # confirm the answer as it is
    items.first.locator(".label-status .badge").wait_for()
    assert items.first.locator(".label-status").inner_text().startswith("confirmed")
    shot(page, "ui-review", full_page=False)
    page.goto(gateway.url + "/quality")
    assert page.locator('#quality-table tr[data-model="stack"]').inner_text().split()[1] == "2"
    assert "SYNTHETIC" in page.inner_text("main")
    shot(page, "ui-quality")
    assert not page.console_errors


def test_history_survives_a_gateway_restart(page, stack, start_service, grocery_photos, tmp_path):
    """Upload a grocery photo in Chromium, then see it in the history after a restart of the gateway."""
    db = tmp_path / "restart-history.sqlite3"
    gateway = start_service("stacking", MEMBER_URLS=stack.member_urls(), HISTORY_DB=db)
    card = upload(page, gateway.url, grocery_photos[1:2])[0]
    rid = card.get_attribute("data-request-id")
    assert card.query_selector(".result-summary .label"), card_text(card)
    assert gateway.stop() == 0
    restarted = start_service("stacking", MEMBER_URLS=stack.member_urls(), HISTORY_DB=db)
    assert restarted.proc.pid != gateway.proc.pid
    page.goto(restarted.url + "/history")
    assert history_request_ids(page) == [rid]
    assert page.locator(f'tr[data-request-id="{rid}"] img.thumb').evaluate("img => img.naturalWidth > 0")
    shot(page, "ui-history-after-restart", full_page=False)


def test_a_broken_history_database_never_fails_the_prediction(page, stack, start_service, tmp_path, jpeg):
    blocker = tmp_path / "a-file-not-a-folder"
    blocker.write_text("the history cannot live under a file")
    # HISTORY_RETRY_S: how long the writer retries before it drops the record and counts it (60 s by default).
    gateway = start_service("stacking", MEMBER_URLS=stack.member_urls(), HISTORY_DB=blocker / "history.sqlite3",
                            HISTORY_RETRY_S="0.5")
    resp = requests.post(gateway.url + "/", data=jpeg, timeout=60)
    assert resp.status_code == 200 and resp.json()["label"]
    failures = 0.0
    for _ in range(50):  # the writer thread counts it a moment after the answer
        metrics = requests.get(gateway.url + "/metrics", timeout=10).text
        found = re.search(r'history_record_failures_total\{reason="storage_error"\} (\S+)', metrics)
        failures = float(found.group(1)) if found else 0.0
        if failures:
            break
        page.wait_for_timeout(100)
    assert failures == 1.0
    page.goto(gateway.url + "/history")
    text = page.inner_text("main")  # the page says why, in words
    assert "could not be written to the history" in text and "is a file, not a folder" in text
    shot(page, "ui-history-broken-db", full_page=False)


def test_degraded_answers_are_flagged_on_the_page_and_in_the_history(page, stack, start_service, grocery_photos):
    from tests.integration.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: ocr_nb counts as failed
    urls = stack.member_urls().replace(stack.urls["ocr_nb"], dead)
    gateway = start_service("stacking", MEMBER_URLS=urls)
    card = upload(page, gateway.url, grocery_photos[:1])[0]
    text = card_text(card)
    assert "Degraded answer." in text and "Made without ocr_nb (connection failed" in text
    assert "failed: connection failed" in text  # the member's column says why it is empty
    shot(page, "ui-degraded-desktop", full_page=False)
    page.goto(gateway.url + "/history?degraded=true")
    rows = page.locator("#history-table tbody tr")
    assert rows.count() == 1 and "degraded" in rows.first.inner_text()
    assert "ocr_nb: failed (connection failed" in rows.first.inner_text()
    page.goto(gateway.url + "/history?degraded=false")
    assert "No predictions match these filters." in page.inner_text("main")


def test_an_unavailable_service_is_explained_in_words(page, start_service, grocery_photos):
    from tests.integration.conftest import free_port

    nowhere = ",".join(f"{name}=http://127.0.0.1:{free_port()}" for name in ("ocr_nb", "clip_svm", "clip_logreg"))
    gateway = start_service("stacking", MEMBER_URLS=nowhere)
    card = upload(page, gateway.url, grocery_photos[:1])[0]
    text = card_text(card)
    assert "Not classified" in text and "The service is unavailable right now." in text
    assert "No member could answer" in text and "Try again in a moment." in text
    shot(page, "ui-unavailable-desktop", full_page=False)
