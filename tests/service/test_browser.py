"""A real headless Chromium uploads a photo and sees the boxes appear without reloading the page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from predictions.models import Prediction

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# On a photo's own page (`#result`): its status badge and its boxes.
RESULT_STATUS = ("css selector", "#result .status")
RESULT_BOXES = ("css selector", "#result .boxes .box")


def start_chromium(*arguments: str) -> object:
    """Headless Chromium driven by Selenium, with `arguments` besides ours (e.g. a fake camera)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are needed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", *arguments):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for CSP reports
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    driver = start_chromium()
    yield driver
    driver.quit()


def choose_and_send(browser, live_server, *photos: Path) -> None:
    """On the upload page: choose the photos and press Estimate."""
    from selenium.webdriver.common.by import By

    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(map(str, photos)))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def open_as_visitor(browser, live_server, path: str) -> None:
    """Open a page of the site as the visitor who owns the rows a test made for "visitor"."""
    browser.get(live_server.url + "/")
    browser.add_cookie({"name": "sessionid", "value": _session_for_visitor("visitor")})
    browser.get(live_server.url + path)


def test_upload_then_boxes_appear_without_reload(
    live_server, celery_worker, browser, astronaut_jpeg, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#previews img")))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    prediction = Prediction.objects.get()
    assert browser.current_url == f"{live_server.url}/p/{prediction.id}/"
    browser.execute_script("window.__sameDocument = true;")  # survives only if the page is never reloaded

    WebDriverWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    boxes = WebDriverWait(browser, 10).until(
        ec.visibility_of_all_elements_located((By.CSS_SELECTOR, "#result .boxes .box"))
    )
    if screenshot := os.environ.get("AGEGENDER_SCREENSHOT"):  # `make screenshot` keeps the picture
        browser.save_screenshot(screenshot)

    assert browser.execute_script("return window.__sameDocument === true;")
    assert len(boxes) == 1
    photo_rect = browser.find_element(By.CSS_SELECTOR, "#result .photo").rect
    box_rect = boxes[0].rect
    assert box_rect["width"] > 10 and box_rect["height"] > 10
    # The box sits where the engine found the face, scaled to the displayed photo.
    prediction.refresh_from_db()
    face = prediction.faces.get()
    scale = photo_rect["width"] / prediction.image_width
    assert abs(box_rect["x"] - photo_rect["x"] - face.x1 * scale) <= 4
    assert abs(box_rect["width"] - (face.x2 - face.x1) * scale) <= 6
    assert (
        photo_rect["x"] <= box_rect["x"]
        and box_rect["x"] + box_rect["width"] <= photo_rect["x"] + photo_rect["width"] + 1
    )
    faces_text = browser.find_element(By.CSS_SELECTOR, "#result .faces").text
    assert "Age" in faces_text and "female" in faces_text and "% sure" in faces_text


def test_an_iphone_photo_shows_in_the_browser_with_its_box(
    live_server, celery_worker, browser, sideways_heic, tmp_path
):
    """Chromium cannot show HEIC: the preview says so instead of a broken picture, and the result page
    shows a placeholder until the worker has read the photo, then its upright JPEG copy, the face boxed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "IMG_0042.HEIC"
    photo.write_bytes(sideways_heic)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "previews"), "no preview"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#previews img")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    WebDriverWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    WebDriverWait(browser, 10).until(ec.visibility_of_all_elements_located(RESULT_BOXES))
    shown_script = (
        "var img = document.querySelector('#result .photo');"
        "if (!img.complete || !img.naturalWidth) return null;"
        "var canvas = document.createElement('canvas');"
        "canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;"
        "var context = canvas.getContext('2d'); context.drawImage(img, 0, 0);"
        "var pixels = context.getImageData(0, 0, canvas.width, canvas.height).data, sum = 0, squares = 0;"
        "for (var i = 0; i < pixels.length; i += 4) { sum += pixels[i]; squares += pixels[i] * pixels[i]; }"
        "var n = pixels.length / 4, mean = sum / n;"
        "return [img.naturalWidth, img.naturalHeight, Math.sqrt(squares / n - mean * mean)];"
    )
    # The placeholder is one grey (its red channel's spread about 0), the photo is not (about 80).
    spread = lambda driver: (driver.execute_script(shown_script) or [0, 0, 0])[2]  # noqa: E731
    WebDriverWait(browser, 10).until(lambda driver: spread(driver) > 20)
    width, height, _ = browser.execute_script(shown_script)
    assert (width, height) == (384, 512)  # decoded by the browser, upright; not the grey placeholder
    assert "female" in browser.find_element(By.CSS_SELECTOR, "#result .faces").text


def test_a_close_crop_without_a_found_face_is_read_as_one_face_on_request(
    live_server, celery_worker, browser, no_face_jpeg, tmp_path
):
    """The offer appears once the page learns (by polling) that no face was found; taking it reads the
    whole photo as one face, which the page then says was not detected."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "crop.jpg"
    photo.write_bytes(no_face_jpeg)
    choose_and_send(browser, live_server, photo)
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    offer = browser.find_element(By.CSS_SELECTOR, "#result .as-one-face")
    if browser.find_element(By.ID, "result").get_attribute("data-finished") == "false":
        assert not offer.is_displayed()  # hidden while the photo is being read

    WebDriverWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    WebDriverWait(browser, 10).until(ec.visibility_of(offer))
    assert "No face found" in browser.find_element(By.CSS_SELECTOR, "#result .faces").text
    offer.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    WebDriverWait(browser, 240).until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#result .faces"), "no face was detected: the whole photo was read as one"
        )
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result .boxes .box")) == 1
    assert not browser.find_element(By.CSS_SELECTOR, "#result .as-one-face").is_displayed()


def test_a_photo_that_failed_through_our_fault_is_tried_again_on_request(
    live_server, celery_worker, browser, settings, monkeypatch, astronaut_jpeg, tmp_path
):
    """The worker fails on every try (a fault injected into its step after the model, as a storage that
    cannot be written would): the page learns by polling that the photo failed, through no fault of its
    own, and offers "Try again"; with the fault gone, pressing it gets the face."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.conftest import Fault

    settings.AGEGENDER_TASK_RETRIES, settings.AGEGENDER_TASK_RETRY_DELAY = 1, 0
    monkeypatch.setattr("worker.tasks.upright_size_and_thumbnail", Fault(times=2))
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    choose_and_send(browser, live_server, photo)
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    offer = browser.find_element(By.CSS_SELECTOR, "#result .try-again")

    WebDriverWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Failed"))
    WebDriverWait(browser, 10).until(ec.visibility_of(offer))
    assert "Something went wrong" in browser.find_element(By.CSS_SELECTOR, "#result .faces").text
    offer.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    WebDriverWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    WebDriverWait(browser, 10).until(ec.visibility_of_element_located(RESULT_BOXES))
    assert "female" in browser.find_element(By.CSS_SELECTOR, "#result .faces").text
    assert not browser.find_element(By.CSS_SELECTOR, "#result .try-again").is_displayed()


def test_several_photos_show_their_faces_together_without_reload(
    live_server, celery_worker, browser, astronaut_jpeg, no_face_jpeg, tmp_path
):
    """An upload of several photos lands on one page where every photo gets its boxes and face lines as
    its job finishes; a refused file is named with its reason on that page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    files = {"astronaut.jpg": astronaut_jpeg, "gradient.jpg": no_face_jpeg, "notes.txt": b"not a photo"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    choose_and_send(browser, live_server, *(tmp_path / name for name in files))

    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "summary")))
    astronaut = Prediction.objects.get(original_name="astronaut.jpg")
    gradient = Prediction.objects.get(original_name="gradient.jpg")
    assert browser.current_url == f"{live_server.url}/results/?ids={astronaut.id}%2C{gradient.id}"
    assert "notes.txt" in browser.find_element(By.CSS_SELECTOR, ".messages").text
    browser.execute_script("window.__sameDocument = true;")

    WebDriverWait(browser, 240).until(
        ec.text_to_be_present_in_element((By.ID, "summary"), "2 of 2 photos finished · 1 face found")
    )
    cards = browser.find_elements(By.CSS_SELECTOR, "article.result")
    assert [card.find_element(By.TAG_NAME, "h2").text for card in cards] == ["astronaut.jpg", "gradient.jpg"]
    WebDriverWait(browser, 10).until(lambda _: cards[0].find_element(By.CSS_SELECTOR, ".box").is_displayed())
    assert len(cards[0].find_elements(By.CSS_SELECTOR, ".boxes .box")) == 1
    assert "female" in cards[0].find_element(By.CSS_SELECTOR, ".faces").text
    assert cards[0].find_element(By.CSS_SELECTOR, ".status").text == "Done"
    assert not cards[1].find_elements(By.CSS_SELECTOR, ".boxes .box")
    assert "No face found" in cards[1].find_element(By.CSS_SELECTOR, ".faces").text
    assert cards[1].find_element(By.CSS_SELECTOR, ".as-one-face").is_displayed()
    assert not cards[0].find_element(By.CSS_SELECTOR, ".as-one-face").is_displayed()
    assert browser.execute_script("return window.__sameDocument === true;")


def test_labels_that_would_cover_other_faces_are_cut_to_the_faces_number(
    live_server, celery_worker, browser, face_grid_jpeg, tmp_path
):
    """Eight faces close together: on a phone-wide page each label ("3 · female 38") would cover the
    next face, so it shows the face's number only; on a wide page, where it fits, all of it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "grid.jpg"
    photo.write_bytes(face_grid_jpeg)
    choose_and_send(browser, live_server, photo)
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    WebDriverWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    labels = lambda: [label.text for label in browser.find_elements(By.CSS_SELECTOR, "#result .box-label")]  # noqa: E731
    full = [f"{index} · female" for index in range(1, 9)]
    try:
        browser.set_window_size(390, 900)  # drawn by polling, then fitted as the window narrows
        WebDriverWait(browser, 10).until(lambda _: labels() == [str(index) for index in range(1, 9)])

        browser.refresh()  # drawn by the server, fitted as the page loads
        WebDriverWait(browser, 10).until(lambda _: labels() == [str(index) for index in range(1, 9)])

        browser.set_window_size(1280, 1000)
        WebDriverWait(browser, 10).until(lambda _: [label.rsplit(" ", 1)[0] for label in labels()] == full)
    finally:
        browser.set_window_size(1280, 1000)


def test_pictures_pasted_on_the_upload_page_are_sent_like_chosen_photos(
    live_server, celery_worker, browser, astronaut_jpeg
):
    """Ctrl+V twice with a picture on the clipboard (a paste event carrying it, as Chromium makes one):
    both join the form under names of their own, and are read like any upload."""
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    paste = (
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));"
        "const clipboard = new DataTransfer();"
        "clipboard.items.add(new File([bytes], 'image.png', { type: 'image/jpeg' }));"
        "document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: clipboard, bubbles: true }));"
    )
    browser.get(live_server.url + "/")
    for _ in range(2):
        browser.execute_script(paste, base64.b64encode(astronaut_jpeg).decode())
    WebDriverWait(browser, 10).until(
        lambda _: len(browser.find_elements(By.CSS_SELECTOR, "#previews img")) == 2
    )
    assert browser.find_element(By.ID, "previews").text.split() == ["pasted-1.jpg", "pasted-2.jpg"]
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "summary")))
    WebDriverWait(browser, 240).until(
        ec.text_to_be_present_in_element((By.ID, "summary"), "2 of 2 photos finished · 2 faces found")
    )
    assert sorted(Prediction.objects.values_list("original_name", flat=True)) == [
        "pasted-1.jpg",
        "pasted-2.jpg",
    ]
    assert [face.gender for p in Prediction.objects.all() for face in p.faces.all()] == ["female", "female"]


def test_a_batch_of_refused_files_is_explained_on_the_form_without_leaving_it(live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    (tmp_path / "notes.txt").write_bytes(b"not a photo")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    browser.get(live_server.url + "/")
    browser.execute_script("window.__sameDocument = true;")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(
        f"{tmp_path / 'notes.txt'}\n{tmp_path / 'broken.jpg'}"
    )
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    section = WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "upload-errors")))
    assert "Nothing was uploaded" in section.text
    assert "notes.txt" in section.text and "broken.jpg" in section.text
    assert browser.execute_script("return window.__sameDocument === true;")  # told in place
    assert browser.find_element(By.CSS_SELECTOR, "button[type=submit]").is_enabled()  # may try again
    assert Prediction.objects.count() == 0


def test_choosing_more_photos_than_one_upload_takes_is_said_before_sending(
    live_server, browser, settings, astronaut_jpeg, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings.AGEGENDER_MAX_FILES_PER_UPLOAD = 2
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(astronaut_jpeg)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(map(str, paths)))
    warning = "At most 2 photos at a time: you chose 3."
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "upload-progress"), warning))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert browser.find_element(By.ID, "upload-progress").text == warning
    assert browser.current_url == live_server.url + "/"
    assert Prediction.objects.count() == 0


def csp_violations(browser) -> list[str]:
    """Console messages of the page(s) since the last call that report a Content-Security-Policy refusal."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def test_pages_and_admin_run_under_the_content_security_policy(
    live_server, celery_worker, browser, astronaut_jpeg, tmp_path, django_user_model
):
    """Every script the site and Django's admin use comes from the site itself: nothing is refused."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    csp_violations(browser)  # forget earlier tests' messages
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#previews img")))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()  # the script's upload
    WebDriverWait(browser, 240).until(ec.visibility_of_all_elements_located(RESULT_BOXES))
    browser.get(live_server.url + "/history/")
    WebDriverWait(browser, 10).until(
        lambda b: b.execute_script("return document.querySelector('.thumb').complete")
    )
    assert "Content-Security-Policy" not in browser.page_source  # a header, not a meta tag
    errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []  # no refusal, no missing file (a favicon included), no script error

    django_user_model.objects.create_superuser("root", "root@example.com", "a-long-password-123")
    browser.get(live_server.url + "/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("root")
    browser.find_element(By.NAME, "password").send_keys("a-long-password-123")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "user-tools")))  # signed in
    browser.get(live_server.url + "/admin/predictions/prediction/")
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result_list")))
    browser.find_element(By.ID, "action-toggle").click()  # the admin's own script ticks every row
    assert all(box.is_selected() for box in browser.find_elements(By.CSS_SELECTOR, "input.action-select"))
    assert csp_violations(browser) == []


def test_a_waiting_photos_page_counts_down_the_photos_ahead(live_server, browser, astronaut_jpeg):
    """No worker here: rows are queued directly and finished by hand; the page's polling follows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.service.test_queue_position import queued

    others = [queued(astronaut_jpeg, f"{i}.jpg", seconds_ago=60 - i, session_key="other") for i in range(2)]
    mine = queued(astronaut_jpeg, "mine.jpg", seconds_ago=5)
    open_as_visitor(browser, live_server, f"/p/{mine.id}/")
    waiting = (By.CSS_SELECTOR, "#result .waiting")
    assert browser.find_element(*waiting).text.startswith("Waiting: 2 photos ahead of this one.")
    browser.execute_script("window.__sameDocument = true;")

    Prediction.objects.filter(pk=others[0].pk).update(status=Prediction.Status.DONE)
    WebDriverWait(browser, 20).until(ec.text_to_be_present_in_element(waiting, "Waiting: 1 photo ahead"))
    Prediction.objects.filter(pk=others[1].pk).update(status=Prediction.Status.FAILED)
    WebDriverWait(browser, 20).until(ec.text_to_be_present_in_element(waiting, "Working on it…"))
    assert browser.execute_script("return window.__sameDocument === true;")


def test_the_history_follows_a_waiting_photo_until_its_faces_are_read(
    live_server, celery_worker, browser, face_grid_jpeg
):
    """A photo queued before the history was opened: the page shows it waiting, then, without reload,
    done with its face count, its first faces and the worker's thumbnail."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from predictions import services
    from tests.service.test_queue_position import queued

    waiting = queued(face_grid_jpeg, "grid.jpg", seconds_ago=1)  # not sent: nothing reads it yet
    open_as_visitor(browser, live_server, "/history/")
    item = browser.find_element(By.CSS_SELECTOR, "li.history-item")
    assert item.find_element(By.CSS_SELECTOR, ".status").text == "Queued"
    browser.execute_script("window.__sameDocument = true;")

    services.prediction_rerun(prediction=waiting)  # sent now; the real worker reads it
    WebDriverWait(browser, 240).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "li.history-item .status"), "Done")
    )
    WebDriverWait(browser, 10).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "li.history-item .meta"), "8 faces · ")
    )
    first = Prediction.objects.get(pk=waiting.pk).faces.all()[:3]
    brief = ", ".join(f"{face.gender} {int(face.age + 0.5)}" for face in first) + ", +5 more"
    assert item.find_element(By.CSS_SELECTOR, ".faces-brief").text == brief
    thumb = item.find_element(By.CSS_SELECTOR, "img.thumb")
    WebDriverWait(browser, 10).until(lambda _: browser.execute_script("return arguments[0].complete;", thumb))
    assert thumb.get_attribute("src").endswith("?done") and thumb.get_attribute("naturalWidth") != "520"
    assert browser.execute_script("return window.__sameDocument === true;")


def test_a_page_in_a_background_tab_stops_polling_until_shown(live_server, browser, astronaut_jpeg):
    """No worker: a queued row, its page open. While the page is hidden (the tab in the background) it
    sends no status request; shown again, it asks at once, and follows the photo to the end."""
    import time

    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.service.test_queue_position import queued

    mine = queued(astronaut_jpeg, "mine.jpg", seconds_ago=1)
    open_as_visitor(browser, live_server, f"/p/{mine.id}/")
    browser.execute_script(  # count the page's requests, and let the test say whether it is hidden
        "window.__polls = 0; var real = window.fetch;"
        "window.fetch = function () { window.__polls += 1; return real.apply(this, arguments); };"
        "window.__hidden = false;"
        "Object.defineProperty(document, 'hidden', { get: function () { return window.__hidden; } });"
    )
    polls = lambda: browser.execute_script("return window.__polls;")  # noqa: E731
    WebDriverWait(browser, 10).until(lambda _: polls() >= 2)

    browser.execute_script("window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'));")
    hidden_at = polls()
    time.sleep(6)  # polls back off to one every 4 s: at least one would have gone
    assert polls() == hidden_at

    browser.execute_script("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'));")
    WebDriverWait(browser, 2).until(lambda _: polls() == hidden_at + 1)  # at once, not after a delay
    Prediction.objects.filter(pk=mine.pk).update(status=Prediction.Status.DONE)
    WebDriverWait(browser, 10).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))


AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"


def accessibility_violations(browser) -> list[str]:
    """What axe-core (run in the page as it stands) finds wrong for people using assistive technology,
    keyboards, or poor eyesight: contrast, names of links and controls, landmarks, labels…"""
    browser.execute_script(AXE.read_text(encoding="utf-8"))
    found = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(r.violations.map(v => [v.id, v.impact, v.help,"
        " v.nodes.slice(0, 3).map(n => n.target.join(' '))])));"
    )
    return [f"{rule} ({impact}): {text} at {', '.join(where)}" for rule, impact, text, where in found]


def test_our_pages_pass_an_accessibility_audit(
    live_server, celery_worker, browser, astronaut_jpeg, no_face_jpeg, tmp_path
):
    """axe-core finds nothing on the pages a person goes through: upload (empty and with photos chosen),
    the results of several photos (waiting and done), one photo's page, the history, the account pages."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    for name, content in {"astronaut.jpg": astronaut_jpeg, "gradient.jpg": no_face_jpeg}.items():
        (tmp_path / name).write_bytes(content)
    found = {}
    browser.get(live_server.url + "/")
    found["upload"] = accessibility_violations(browser)
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(
        f"{tmp_path / 'astronaut.jpg'}\n{tmp_path / 'gradient.jpg'}"
    )
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#previews img")))
    found["upload, photos chosen"] = accessibility_violations(browser)
    browser.find_element(By.CSS_SELECTOR, "button.primary[type=submit]").click()
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "summary")))
    found["results, waiting"] = accessibility_violations(browser)
    WebDriverWait(browser, 240).until(
        ec.text_to_be_present_in_element((By.ID, "summary"), "2 of 2 photos finished")
    )
    found["results, done"] = accessibility_violations(browser)
    browser.get(browser.find_element(By.CSS_SELECTOR, "article.result h2 a").get_attribute("href"))
    found["a photo's page"] = accessibility_violations(browser)
    for page in ("/history/", "/accounts/login/", "/accounts/signup/", "/no-such-page/"):
        browser.get(live_server.url + page)
        found[page] = accessibility_violations(browser)

    assert {page: problems for page, problems in found.items() if problems} == {}


def _session_for_visitor(visitor_key: str) -> str:
    from django.contrib.sessions.backends.db import SessionStore

    from predictions.signals import VISITOR_KEY

    session = SessionStore()
    session[VISITOR_KEY] = visitor_key
    session.create()
    return session.session_key


def test_too_many_photos_this_hour_is_said_on_the_form(
    live_server, browser, upload_allowance, astronaut_jpeg, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    upload_allowance(1)
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for path in paths:
        path.write_bytes(astronaut_jpeg)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(map(str, paths)))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    section = WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "upload-errors")))
    assert "Too many photos from your address: at most 1 an hour" in section.text
    assert Prediction.objects.count() == 0
