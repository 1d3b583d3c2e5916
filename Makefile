# `make test` is what CI runs (.ci/run); it installs what it needs first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install kafka test unit integration lint format demo schemas bench clean

install:  ## system packages (apt, if missing), Python deps (editable), the Kafka broker jars
	bash deploy/dev/system-deps.sh
	$(PIP) install --quiet --disable-pip-version-check -e '.[dev,bench]'
	bash deploy/kafka/local-kafka.sh fetch

kafka:  ## a local broker for development; prints its bootstrap address
	bash deploy/kafka/local-kafka.sh start

test: install lint  ## everything CI checks: lint, unit, detector and integration tests (real broker)
	$(PYTHON) -m pytest -q

unit:  ## fast tests, no broker
	$(PYTHON) -m pytest -q -m "not integration"

integration:
	$(PYTHON) -m pytest -q -m integration

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

schemas:  ## regenerate schemas/json after changing a wire model
	$(PYTHON) -m schemas.export

demo: install  ## the embedded default: local broker, service, a real sample, alerts live
	outrider demo

bench:
	$(PYTHON) -m bench.throughput --json
