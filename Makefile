# harness — two commands: `make up`, then `make test`.
# Every target installs what it needs first (Debian packages, the virtualenv), and does
# nothing when that is already done.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
# The Debian packages, from the one table of what harness uses from each (harness/cluster/hostpackages.py).
APT_PACKAGES := $(shell $(PYTHON) -m harness.cluster.hostpackages)
# What running VMs adds (libvirt, qemu, debootstrap): `make vagrant-deps`, not `make deps`.
VM_PACKAGES := $(shell $(PYTHON) -m harness.cluster.hostpackages vm)
# Packaged daemons harness runs itself, under supervisord inside its nodes: never as the host's services.
HOST_SERVICES_OFF := etcd prometheus
CLUSTER ?= local
# Every recipe finds the virtualenv's tools (kubectl, ansible, supervisorctl) first, as the README's PATH does; and
# tests fail rather than skip when a tool is missing, since `deps` installed them all (tests/tools.py).
export PATH := $(CURDIR)/$(BIN):$(PATH)
export HARNESS_REQUIRE_TOOLS := 1

.PHONY: up down status deps lint test unit integration infra bench clean vagrant-deps vagrant-up vagrant-down \
	vagrant-test box

# A local cluster (1 master, 2 workers as Linux-namespace nodes, provisioned by ansible/site.yml).
up: deps
	$(BIN)/harness up --name $(CLUSTER)

down: deps
	$(BIN)/harness down --name $(CLUSTER)

status: deps
	$(BIN)/harness status --name $(CLUSTER)

deps: $(STAMPS)/apt $(STAMPS)/venv

# The stamp records each package's installed version: what this machine got from `make`.
$(STAMPS)/apt: Makefile harness/cluster/hostpackages.py
	@$(call apt_install,$(APT_PACKAGES))

$(STAMPS)/vm-apt: Makefile harness/cluster/hostpackages.py
	@$(call apt_install,$(VM_PACKAGES))

# Install the missing ones of a package list, then record the versions in the target (a stamp).
define apt_install
test -n "$(1)" || { echo "no package list from harness/cluster/hostpackages.py" >&2; exit 1; }; \
mkdir -p $(STAMPS); \
missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
if [ -n "$$missing" ]; then \
  echo "Installing Debian packages:" $$missing; \
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
  if [ -d /run/systemd/system ]; then systemctl disable --now $(HOST_SERVICES_OFF) >/dev/null 2>&1 || true; fi; \
fi; \
dpkg-query -W -f='$${Package} $${Version}\n' $(1) > $@.tmp && mv $@.tmp $@
endef

$(STAMPS)/venv: pyproject.toml requirements.lock
	@mkdir -p $(STAMPS)
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the harness virtualenv in $(VENV)"
	@$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $@

lint: deps
	$(BIN)/ruff check harness tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd ansible && PATH=$(CURDIR)/$(BIN):$$PATH ansible-lint --offline -q

unit: deps
	$(BIN)/pytest -q tests/unit

integration: deps
	$(BIN)/pytest -q tests/integration

# lint, unit and integration tests, then the testinfra suites against a fresh local cluster of their own (its own
# name and network: yours is untouched), removed whatever the result (logs of a failed run: reports/failed-<name>/).
test: deps lint
	$(BIN)/pytest -q tests/unit tests/integration --junitxml=reports/junit.xml
	$(BIN)/pytest -q tests/infra --new-cluster --junitxml=reports/infra.xml

# The testinfra suites against a running local cluster (`make up`).
infra: deps
	$(BIN)/pytest -q tests/infra --cluster $(CLUSTER)

bench: deps
	$(BIN)/python bench/apiserver.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/controllers.py
	$(BIN)/python bench/hollow.py
	$(BIN)/python bench/pod_startup.py
	$(BIN)/python bench/dns.py
	$(BIN)/python bench/proxy_programming.py
	$(BIN)/python bench/services.py
	$(BIN)/python bench/bringup.py
	$(BIN)/python bench/log_pipeline.py
	$(BIN)/python bench/tls.py

# ---- the cluster as VMs (libvirt; KVM where it works, else qemu's emulation) ----

vagrant-deps: deps $(STAMPS)/vm-apt

# The box: Debian bookworm with everything the roles install, built here and added to Vagrant (cached).
box: vagrant-deps
	$(BIN)/harness box build

# 1 master + 1 worker as VMs (cluster.yaml's vagrant section; e.g. `make vagrant-up VAGRANT_ARGS="--masters 3
# --workers 2"`), provisioned by ansible/site.yml: inventory/vagrant/hosts.yml, inventory/vagrant/kubeconfig.
vagrant-up: vagrant-deps
	$(BIN)/harness up --provider vagrant $(VAGRANT_ARGS)

vagrant-down: deps
	$(BIN)/harness down --name vagrant

# box (cached) → VMs → the infra suites → destroy (also when they fail), with a JUnit report.
vagrant-test: vagrant-deps
	$(BIN)/pytest -q tests/infra --new-cluster --provider vagrant --junitxml=reports/vagrant.xml

clean:
	rm -rf $(STAMPS) build *.egg-info reports
