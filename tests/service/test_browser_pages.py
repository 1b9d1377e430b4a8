"""The pages in a real headless Chromium while photos wait (polling: the queue ahead, the history, a
background tab), and audited: the Content-Security-Policy refuses nothing, axe-core finds nothing."""

from __future__ import annotations

import pytest

from predictions.models import Prediction
from tests.service.browser import (
    RESULT_BOXES,
    RESULT_STATUS,
    PageWait,
    accessibility_violations,
    csp_violations,
    open_as_visitor,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]


def test_a_waiting_photos_page_counts_down_the_photos_ahead(live_server, browser, astronaut_jpeg):
    """No worker here: rows are queued directly and finished by hand; the page's polling follows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    from tests.service.test_queue_position import queued

    others = [queued(astronaut_jpeg, f"{i}.jpg", seconds_ago=60 - i, session_key="other") for i in range(2)]
    mine = queued(astronaut_jpeg, "mine.jpg", seconds_ago=5)
    open_as_visitor(browser, live_server, f"/p/{mine.id}/")
    waiting = (By.CSS_SELECTOR, "#result .waiting")
    assert browser.find_element(*waiting).text.startswith("Waiting: 2 photos ahead of this one.")
    browser.execute_script("window.__sameDocument = true;")

    Prediction.objects.filter(pk=others[0].pk).update(status=Prediction.Status.DONE)
    PageWait(browser, 20).until(ec.text_to_be_present_in_element(waiting, "Waiting: 1 photo ahead"))
    Prediction.objects.filter(pk=others[1].pk).update(status=Prediction.Status.FAILED)
    PageWait(browser, 20).until(ec.text_to_be_present_in_element(waiting, "Working on it…"))
    assert browser.execute_script("return window.__sameDocument === true;")


def test_the_history_follows_a_waiting_photo_until_its_faces_are_read(
    live_server, celery_worker, browser, face_grid_jpeg
):
    """A photo queued before the history was opened: the page shows it waiting, then, without reload,
    done with its face count, its first faces and the worker's thumbnail."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    from predictions import services
    from tests.service.test_queue_position import queued

    waiting = queued(face_grid_jpeg, "grid.jpg", seconds_ago=1)  # not sent: nothing reads it yet
    open_as_visitor(browser, live_server, "/history/")
    item = browser.find_element(By.CSS_SELECTOR, "li.history-item")
    assert item.find_element(By.CSS_SELECTOR, ".status").text == "Queued"
    browser.execute_script("window.__sameDocument = true;")

    services.prediction_rerun(prediction=waiting)  # sent now; the real worker reads it
    PageWait(browser, 240).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "li.history-item .status"), "Done")
    )
    PageWait(browser, 10).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "li.history-item .meta"), "8 faces · ")
    )
    first = Prediction.objects.get(pk=waiting.pk).faces.all()[:3]
    brief = ", ".join(f"{face.gender} {int(face.age + 0.5)}" for face in first) + ", +5 more"
    assert item.find_element(By.CSS_SELECTOR, ".faces-brief").text == brief
    thumb = item.find_element(By.CSS_SELECTOR, "img.thumb")
    PageWait(browser, 10).until(lambda _: browser.execute_script("return arguments[0].complete;", thumb))
    assert thumb.get_attribute("src").endswith("?done") and thumb.get_attribute("naturalWidth") != "520"
    assert browser.execute_script("return window.__sameDocument === true;")


def test_a_page_in_a_background_tab_stops_polling_until_shown(live_server, browser, astronaut_jpeg):
    """No worker: a queued row, its page open. While the page is hidden (the tab in the background) it
    sends no status request; shown again, it asks at once, and follows the photo to the end."""
    import time

    from selenium.webdriver.support import expected_conditions as ec

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
    PageWait(browser, 10).until(lambda _: polls() >= 2)

    browser.execute_script("window.__hidden = true; document.dispatchEvent(new Event('visibilitychange'));")
    hidden_at = polls()
    time.sleep(6)  # polls back off to one every 4 s: at least one would have gone
    assert polls() == hidden_at

    browser.execute_script("window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'));")
    PageWait(browser, 2).until(lambda _: polls() == hidden_at + 1)  # at once, not after a delay
    Prediction.objects.filter(pk=mine.pk).update(status=Prediction.Status.DONE)
    PageWait(browser, 10).until(ec.text_to_be_present_in_element(RESULT_STATUS, "Done"))


def test_pages_and_admin_run_under_the_content_security_policy(
    live_server, celery_worker, browser, astronaut_jpeg, tmp_path, django_user_model
):
    """Every script the site and Django's admin use comes from the site itself: nothing is refused."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    csp_violations(browser)  # forget earlier tests' messages
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    PageWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#previews img")))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()  # the script's upload
    PageWait(browser, 240).until(ec.visibility_of_all_elements_located(RESULT_BOXES))
    browser.get(live_server.url + "/history/")
    PageWait(browser, 10).until(
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
    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "user-tools")))  # signed in
    browser.get(live_server.url + "/admin/predictions/prediction/")
    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "result_list")))
    browser.find_element(By.ID, "action-toggle").click()  # the admin's own script ticks every row
    assert all(box.is_selected() for box in browser.find_elements(By.CSS_SELECTOR, "input.action-select"))
    assert csp_violations(browser) == []


def test_our_pages_pass_an_accessibility_audit(
    live_server, celery_worker, browser, astronaut_jpeg, no_face_jpeg, tmp_path
):
    """axe-core finds nothing on the pages a person goes through: upload (empty and with photos chosen),
    the results of several photos (waiting and done), one photo's page, the history, the account pages."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    for name, content in {"astronaut.jpg": astronaut_jpeg, "gradient.jpg": no_face_jpeg}.items():
        (tmp_path / name).write_bytes(content)
    found = {}
    browser.get(live_server.url + "/")
    found["upload"] = accessibility_violations(browser)
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(
        f"{tmp_path / 'astronaut.jpg'}\n{tmp_path / 'gradient.jpg'}"
    )
    PageWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#previews img")))
    found["upload, photos chosen"] = accessibility_violations(browser)
    browser.find_element(By.CSS_SELECTOR, "button.primary[type=submit]").click()
    PageWait(browser, 30).until(ec.presence_of_element_located((By.ID, "summary")))
    found["results, waiting"] = accessibility_violations(browser)
    PageWait(browser, 240).until(
        ec.text_to_be_present_in_element((By.ID, "summary"), "2 of 2 photos finished")
    )
    found["results, done"] = accessibility_violations(browser)
    browser.get(browser.find_element(By.CSS_SELECTOR, "article.result h2 a").get_attribute("href"))
    found["a photo's page"] = accessibility_violations(browser)
    for page in ("/history/", "/accounts/login/", "/accounts/signup/", "/no-such-page/"):
        browser.get(live_server.url + page)
        found[page] = accessibility_violations(browser)

    assert {page: problems for page, problems in found.items() if problems} == {}
