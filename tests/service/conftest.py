"""Fixtures of the service tests that more than one test module uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.browser import start_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the tests of a module (starting one takes seconds)."""
    driver = start_chromium()
    yield driver
    driver.quit()
