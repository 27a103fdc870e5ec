# Cluster targets: knative-saga on a local kind cluster (docs/deploy.md). Included by the root Makefile
# (`-include mk/*.mk`); also usable alone: `make -f mk/cluster.mk <target>`. Every version these targets
# install is pinned in scripts/cluster/versions.env; every target is idempotent and re-runnable.
# The work is done by small bash scripts in scripts/cluster/ (shellcheck-clean, `set -euo pipefail`).

include scripts/cluster/versions.env

BIN ?= .venv/bin
PYTEST_ARGS ?=
CLUSTER := scripts/cluster

.PHONY: kind-up images deploy e2e-kind replay kind-down manifests-check

kind-up: ## create the kind cluster and local registry, install Istio + Knative + Kafka broker (pinned)
	$(CLUSTER)/kind-up.sh

images: ## build the function image, push it to localhost:5001, tagged by git revision
	$(CLUSTER)/images.sh

deploy: images ## create Secrets, apply deploy/kind (knative/ + platform + istio/), wait until Ready
	$(CLUSTER)/deploy.sh

e2e-kind: ## end-to-end tests through the Istio ingress gateway (http://127.0.0.1, Host $(INGRESS_HOST))
	$(CLUSTER)/e2e.sh $(PYTEST_ARGS)

replay: ## saga replay as a Job in the cluster: TRIGGER=name FROM=earliest|RFC3339|offset, or DEAD_LETTERS=1
	$(CLUSTER)/replay.sh

kind-down: ## delete the kind cluster and the local registry
	$(CLUSTER)/kind-down.sh

manifests-check: ## offline checks: manifests against their schemas, project rules, scripts, targets
	$(BIN)/pytest tests/manifests $(PYTEST_ARGS)
