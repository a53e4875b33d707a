# rag-poc: `make up` starts the whole stack, `make test` runs every check. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck security unit install lock clean docs chaos bench-vs-celery bench-scale test-containers images compose-smoke

# The venv installs the exact versions (and hashes) of requirements/dev-lock.txt, then the
# project itself without resolving anything: a build today and one next month get the same
# packages. pyproject.toml holds the allowed ranges; `make lock` turns them into the lock files.
$(STAMP): pyproject.toml requirements/dev-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/ragpoc up

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# bandit's static security checks: no finding of medium or high severity (-ll) in the code
# that runs; each deliberate exception is marked `# nosec BNNN` with its reason beside it.
security: $(STAMP)
	$(BIN)/bandit --quiet --recursive --severity-level medium libs services scripts bench

# pytest exits 5 when it collected no test: that is a failure, said plainly.
test: lint typecheck security
	$(BIN)/pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$code

# Consumer groups, duplicate protection, projection and rebuild on PostgreSQL and SSE resume
# against Valkey and PostgreSQL containers from testcontainers, not the machine's servers. The
# engine: DOCKER_HOST or /var/run/docker.sock if it answers, else podman (needs the images of
# `make images`). Without an engine or the images the tests are skipped and say why.
test-containers: $(STAMP)
	$(BIN)/pytest -m containers tests/containers $(PYTEST_ARGS)

# The long fault run: CHAOS_MINUTES (10) of random faults against `ragpoc up` plus a second
# runner and gateway on PostgreSQL, then the history checker's table; exit 1 if a promise broke.
CHAOS_MINUTES ?= 10
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --minutes $(CHAOS_MINUTES)

# rag-poc against its original Celery design (bench/peers/celery_seed), side by side; the
# peer's packages are the optional group `peers`. BENCH_ARGS="--quick" for a short run.
bench-vs-celery: $(STAMP)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/peers-lock.txt
	$(BIN)/python -m bench.bench_vs_celery $(BENCH_ARGS)

# Runs/s and Redis CPU per run with 1, 2 and 4 runners, one Valkey against a Valkey Cluster
# (3 masters, 3 replicas), with Redis commands per run (docs/SCALING.md models from them).
# BENCH_ARGS="--quick" for a short run, "--rounds 3" for medians.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.bench_scale $(BENCH_ARGS)

# Regenerate the lock files from pyproject.toml: requirements/lock.txt (runtime: the image),
# dev-lock.txt (runtime + dev: `make install`, CI) and peers-lock.txt (+ the Celery peer), each
# for every platform and Python >= 3.11, with hashes, the larger ones constrained to the smaller.
# Versions already locked stay unless the ranges exclude them; `make lock UPGRADE=1` takes the
# newest allowed versions.
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)
lock: $(STAMP)
	$(LOCK) -o requirements/lock.txt
	$(LOCK) --extra dev -c requirements/lock.txt -o requirements/dev-lock.txt
	$(LOCK) --extra dev --extra peers -c requirements/dev-lock.txt -o requirements/peers-lock.txt

# The parts of docs/ARCHITECTURE.md the code can say by itself (a test checks they are fresh).
docs: $(STAMP)
	$(BIN)/python scripts/gen_docs.py

clean:
	rm -rf $(VENV) .ragpoc .mypy_cache .pytest_cache .ruff_cache

# The container images, built with podman from Debian's mirror and PyPI only (no registry):
# localhost/ragpoc:local (deploy/Dockerfile) and the Valkey/PostgreSQL servers the container
# tests use. A step is skipped while its inputs are unchanged; IMAGES_FORCE=1 rebuilds all.
images:
	deploy/images/build.sh

# docker-compose.yml on those images (deploy/compose.local.yml), under podman-compose: every
# service healthy, the lock smoke test with the sentinel files inside mcp, an e2e run, then
# `compose down` and a check that nothing of the stack is left. Own project name, loopback ports.
compose-smoke: $(STAMP) images
	$(BIN)/python scripts/run_compose_smoke.py --local-images
