# Corral: the two set-up commands are `make demo` and `make test` (see README.md).
# Both bootstrap idempotently (Debian packages, .venv from requirements.txt) before they run.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: demo demo-down test bootstrap lint collection tiers bench molecule requirements clean

# The single-click update demo (lab, cluster, update server, Redis, update service); demo-down stops it all.
demo: bootstrap
	scripts/demo

demo-down:
	scripts/demo-down

test: bootstrap
	scripts/test

bootstrap:
	scripts/bootstrap

lint: bootstrap
	scripts/lint

collection: bootstrap
	scripts/check-collection

# Only the pytest tiers (make tiers TIERS="unit integration").
tiers: bootstrap
	$(VENV)/python tests/run_tiers.py $(foreach t,$(TIERS),--tier $(t))

# Benchmarks at full size (make test runs them at smoke size).
bench: bootstrap
	CORRAL_BENCH_SIZE=full $(VENV)/python -m pytest tests/bench -p no:cacheprovider --benchmark-only -s

# Every role's Molecule scenario on its own lab (converge, idempotence, verify, destroy), one after another:
# for a role's developer; make test converges the same roles once, in the lab tier's site story.
molecule: bootstrap
	set -e; for role in roles/*/molecule/default; do role=$${role#roles/}; role=$${role%%/*}; \
	  (cd roles/$$role && PATH=$(CURDIR)/.venv/bin:$$PATH CORRAL_MOLECULE_LAB=mol$${role:0:4} NO_COLOR=1 molecule test); done

# Re-pin requirements.txt (with hashes) from requirements.in.
requirements: bootstrap
	$(VENV)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links -o requirements.txt requirements.in

clean:
	rm -rf build .stamps .pytest_cache .mypy_cache .ruff_cache .benchmarks
