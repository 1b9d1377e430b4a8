"""A real headless Chromium uploads a photo and sees the boxes appear without reloading the page: the
result pages as the worker reads photos (one, an iPhone's, several, many faces, none found, failed)."""

from __future__ import annotations

import os

import pytest

from predictions.models import Prediction
from tests.service.browser import (  # the `noqa` ones re-exported for code importing them from here
    RESULT_BOXES,
    RESULT_STATUS,
    PageWait,
    accessibility_violations,  # noqa: F401
    choose_and_send,
    csp_violations,  # noqa: F401
    start_chromium,  # noqa: F401
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]


def test_upload_then_boxes_appear_without_reload(
    live_server, celery_worker, browser, astronaut_jpeg, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    PageWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#previews img")))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    prediction = Prediction.objects.get()
    assert browser.current_url == f"{live_server.url}/p/{prediction.id}/"
    browser.execute_script("window.__sameDocument = true;")  # survives only if the page is never reloaded

    PageWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    boxes = PageWait(browser, 10).until(
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

    photo = tmp_path / "IMG_0042.HEIC"
    photo.write_bytes(sideways_heic)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    PageWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "previews"), "no preview"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#previews img")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    PageWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    PageWait(browser, 10).until(ec.visibility_of_all_elements_located(RESULT_BOXES))
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
    PageWait(browser, 10).until(lambda driver: spread(driver) > 20)
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

    photo = tmp_path / "crop.jpg"
    photo.write_bytes(no_face_jpeg)
    choose_and_send(browser, live_server, photo)
    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    offer = browser.find_element(By.CSS_SELECTOR, "#result .as-one-face")
    if browser.find_element(By.ID, "result").get_attribute("data-finished") == "false":
        assert not offer.is_displayed()  # hidden while the photo is being read

    PageWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    PageWait(browser, 10).until(ec.visibility_of(offer))
    assert "No face found" in browser.find_element(By.CSS_SELECTOR, "#result .faces").text
    offer.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    PageWait(browser, 240).until(
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

    from tests.conftest import Fault, retry_at_once

    retry_at_once(monkeypatch, settings, retries=1)
    monkeypatch.setattr("worker.tasks.renditions", Fault(times=2))
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    choose_and_send(browser, live_server, photo)
    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    offer = browser.find_element(By.CSS_SELECTOR, "#result .try-again")

    PageWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Failed"))
    PageWait(browser, 10).until(ec.visibility_of(offer))
    assert "Something went wrong" in browser.find_element(By.CSS_SELECTOR, "#result .faces").text
    offer.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    PageWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    PageWait(browser, 10).until(ec.visibility_of_element_located(RESULT_BOXES))
    assert "female" in browser.find_element(By.CSS_SELECTOR, "#result .faces").text
    assert not browser.find_element(By.CSS_SELECTOR, "#result .try-again").is_displayed()


def test_several_photos_show_their_faces_together_without_reload(
    live_server, celery_worker, browser, astronaut_jpeg, no_face_jpeg, tmp_path
):
    """An upload of several photos lands on one page where every photo gets its boxes and face lines as
    its job finishes; a refused file is named with its reason on that page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    files = {"astronaut.jpg": astronaut_jpeg, "gradient.jpg": no_face_jpeg, "notes.txt": b"not a photo"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    choose_and_send(browser, live_server, *(tmp_path / name for name in files))

    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "summary")))
    astronaut = Prediction.objects.get(original_name="astronaut.jpg")
    gradient = Prediction.objects.get(original_name="gradient.jpg")
    assert browser.current_url == f"{live_server.url}/results/?ids={astronaut.id}%2C{gradient.id}"
    assert "notes.txt" in browser.find_element(By.CSS_SELECTOR, ".messages").text
    browser.execute_script("window.__sameDocument = true;")

    PageWait(browser, 240).until(
        ec.text_to_be_present_in_element((By.ID, "summary"), "2 of 2 photos finished · 1 face found")
    )
    cards = browser.find_elements(By.CSS_SELECTOR, "article.result")
    assert [card.find_element(By.TAG_NAME, "h2").text for card in cards] == ["astronaut.jpg", "gradient.jpg"]
    PageWait(browser, 10).until(lambda _: cards[0].find_element(By.CSS_SELECTOR, ".box").is_displayed())
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

    photo = tmp_path / "grid.jpg"
    photo.write_bytes(face_grid_jpeg)
    choose_and_send(browser, live_server, photo)
    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    PageWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    labels = lambda: [label.text for label in browser.find_elements(By.CSS_SELECTOR, "#result .box-label")]  # noqa: E731
    full = [f"{index} · female" for index in range(1, 9)]
    try:
        browser.set_window_size(390, 900)  # drawn by polling, then fitted as the window narrows
        PageWait(browser, 10).until(lambda _: labels() == [str(index) for index in range(1, 9)])

        browser.refresh()  # drawn by the server, fitted as the page loads
        PageWait(browser, 10).until(lambda _: labels() == [str(index) for index in range(1, 9)])

        browser.set_window_size(1280, 1000)
        PageWait(browser, 10).until(lambda _: [label.rsplit(" ", 1)[0] for label in labels()] == full)
    finally:
        browser.set_window_size(1280, 1000)
