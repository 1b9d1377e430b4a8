""" "Take a photo" on the upload page, in a real Chromium with its fake camera: a live preview, a
snapshot, then the same upload path as a chosen file; and a browser without a camera API never sees it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from predictions.models import Prediction
from tests.service.browser import (
    RESULT_STATUS,
    PageWait,
    accessibility_violations,
    choose_and_send,
    csp_violations,
    start_chromium,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def camera_browser() -> Iterator[object]:
    # A camera that shows Chromium's test pattern, allowed without asking.
    driver = start_chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream")
    yield driver
    driver.quit()


def test_a_snapshot_from_the_camera_is_uploaded_and_read(live_server, celery_worker, camera_browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser = camera_browser
    browser.get(live_server.url + "/")
    PageWait(browser, 10).until(ec.visibility_of_element_located((By.ID, "camera-open"))).click()
    PageWait(browser, 20).until(
        lambda b: b.execute_script("return document.getElementById('camera-video').videoWidth > 0")
    )
    assert browser.find_element(By.ID, "camera-video").is_displayed()  # the live preview
    assert accessibility_violations(browser) == []

    browser.find_element(By.ID, "camera-snap").click()

    PageWait(browser, 10).until(ec.text_to_be_present_in_element((By.ID, "previews"), "camera-1.jpg"))
    assert browser.find_element(By.CSS_SELECTOR, "#previews img").is_displayed()
    assert not browser.find_element(By.ID, "camera-video").is_displayed()  # the camera is closed again
    assert browser.execute_script(
        "return document.getElementById('camera-video').srcObject === null"
    )  # and released
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    PageWait(browser, 240).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))
    prediction = Prediction.objects.get()
    assert prediction.original_name == "camera-1.jpg" and prediction.image.name.endswith(".jpg")
    assert (prediction.image_width, prediction.image_height) == (640, 480)  # Chromium's fake camera


def test_without_a_camera_api_the_page_offers_no_camera_and_still_uploads(
    live_server, jobs_go_nowhere, browser_without_camera, astronaut_jpeg, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser = browser_without_camera
    browser.get(live_server.url + "/")
    assert "js" in browser.find_element(By.TAG_NAME, "html").get_attribute("class")  # the script ran
    assert not browser.find_element(By.ID, "camera").is_displayed()

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    choose_and_send(browser, live_server, photo)

    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result")))
    assert browser.current_url == f"{live_server.url}/p/{Prediction.objects.get().id}/"


@pytest.fixture(scope="module")
def browser_without_camera() -> Iterator[object]:
    """A browser whose pages have no `navigator.mediaDevices` (as over plain HTTP, or an old browser)."""
    driver = start_chromium()
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": "Object.defineProperty(Navigator.prototype, 'mediaDevices', {get: () => undefined});"},
    )
    yield driver
    driver.quit()


def test_the_tokens_page_and_the_api_docs_work_under_the_policy(
    live_server, camera_browser, django_user_model
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser = camera_browser
    csp_violations(browser)  # forget earlier tests' messages
    django_user_model.objects.create_user("ada", password="a-long-password-1")
    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys("ada")
    browser.find_element(By.NAME, "password").send_keys("a-long-password-1")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").submit()
    PageWait(browser, 10).until(ec.presence_of_element_located((By.LINK_TEXT, "API tokens"))).click()
    browser.find_element(By.NAME, "name").send_keys("laptop")
    browser.find_element(By.CSS_SELECTOR, ".token-form button[type=submit]").click()
    key = PageWait(browser, 10).until(ec.visibility_of_element_located((By.ID, "new-token-key"))).text
    assert key.startswith("ag_") and "laptop" in browser.find_element(By.CSS_SELECTOR, ".token-list").text
    assert accessibility_violations(browser) == []

    browser.get(live_server.url + "/api/docs/")  # Swagger UI, from the site's own static files
    PageWait(browser, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .opblock")))
    assert "/api/v1/predictions/" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui").text
    assert csp_violations(browser) == []
