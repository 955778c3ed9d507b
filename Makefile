# The two README commands: `make run` and `make test`. Each sets up what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Debian packages the test suite drives for real (Redis, PostgreSQL, Chromium).
TEST_SYSTEM_PACKAGES := redis-server postgresql chromium

.PHONY: run test install install-test system-packages migrate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch goes first and pinned: a package that asks for torch with a looser range
# would otherwise pull a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check "$$(grep -E '^torch==' requirements.txt)"
	$(BIN)/pip install --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install --disable-pip-version-check -r requirements-test.txt
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: migrate
	@echo "ldmsite is starting on http://$(HOST):$(PORT)/  (Ctrl-C stops it)"
	exec $(BIN)/daphne --bind $(HOST) --port $(PORT) ldmsite.asgi:application

system-packages:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	  else \
	    echo "make test needs these Debian packages:$$missing" >&2; \
	    echo "Install them with: sudo apt-get install$$missing   (or run make test as root)" >&2; \
	    exit 1; \
	  fi; \
	fi

# Tests keep their data apart from `make run`'s ./var.
test: install-test system-packages
	LDM_DATA_DIR=$(CURDIR)/var/test $(BIN)/pytest $(PYTEST_ARGS)
