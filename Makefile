# Two commands do all the set-up: `make run` (the whole service locally) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: run test lint format migrate superuser worker web screenshot

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install -r requirements-dev.txt
	touch $@ $(VENV)/.installed

## run: create the virtualenv, install, migrate, start Redis if needed, a Celery worker and the web server
run: $(VENV)/.installed
	PY=$(PY) scripts/run

## test: install the dev requirements and run the whole test suite
test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrate: $(VENV)/.installed
	$(PY) manage.py migrate --noinput

## superuser: an account for the admin (/admin/), asked for interactively
superuser: migrate
	$(PY) manage.py createsuperuser

worker: $(VENV)/.installed
	$(PY) -m celery -A agegender_site.celery:app worker --loglevel=INFO --concurrency=1

## screenshot: the result page in headless Chromium, saved as docs/result-page.png
screenshot: $(VENV)/.installed-dev
	mkdir -p docs
	AGEGENDER_SCREENSHOT=$(CURDIR)/docs/result-page.png $(PY) -m pytest tests/service/test_browser.py -q
