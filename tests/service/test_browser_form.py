"""The upload form in a real headless Chromium: pasted pictures, and files refused or too many, said on
the form before or without leaving it."""

from __future__ import annotations

import pytest

from predictions.models import Prediction
from tests.service.browser import PageWait

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]


def test_pictures_pasted_on_the_upload_page_are_sent_like_chosen_photos(
    live_server, celery_worker, browser, astronaut_jpeg
):
    """Ctrl+V twice with a picture on the clipboard (a paste event carrying it, as Chromium makes one):
    both join the form under names of their own, and are read like any upload."""
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    paste = (
        "const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));"
        "const clipboard = new DataTransfer();"
        "clipboard.items.add(new File([bytes], 'image.png', { type: 'image/jpeg' }));"
        "document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: clipboard, bubbles: true }));"
    )
    browser.get(live_server.url + "/")
    for _ in range(2):
        browser.execute_script(paste, base64.b64encode(astronaut_jpeg).decode())
    PageWait(browser, 10).until(lambda _: len(browser.find_elements(By.CSS_SELECTOR, "#previews img")) == 2)
    assert browser.find_element(By.ID, "previews").text.split() == ["pasted-1.jpg", "pasted-2.jpg"]
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "summary")))
    PageWait(browser, 240).until(
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

    (tmp_path / "notes.txt").write_bytes(b"not a photo")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    browser.get(live_server.url + "/")
    browser.execute_script("window.__sameDocument = true;")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(
        f"{tmp_path / 'notes.txt'}\n{tmp_path / 'broken.jpg'}"
    )
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    section = PageWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "upload-errors")))
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

    settings.AGEGENDER_MAX_FILES_PER_UPLOAD = 2
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(astronaut_jpeg)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(map(str, paths)))
    warning = "At most 2 photos at a time: you chose 3."
    PageWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "upload-progress"), warning))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert browser.find_element(By.ID, "upload-progress").text == warning
    assert browser.current_url == live_server.url + "/"
    assert Prediction.objects.count() == 0


def test_too_many_photos_this_hour_is_said_on_the_form(
    live_server, browser, upload_allowance, astronaut_jpeg, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    upload_allowance(1)
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for path in paths:
        path.write_bytes(astronaut_jpeg)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys("\n".join(map(str, paths)))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    section = PageWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "upload-errors")))
    assert "Too many photos from your address: at most 1 an hour" in section.text
    assert Prediction.objects.count() == 0
