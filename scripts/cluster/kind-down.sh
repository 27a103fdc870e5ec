#!/usr/bin/env bash
# `make kind-down`: deletes the kind cluster and the local registry (KEEP_REGISTRY=1 keeps the
# registry and its images). Idempotent: what does not exist is skipped.
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need docker
if [[ -x "${KIND}" ]] && "${KIND}" get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  log "delete kind cluster ${CLUSTER_NAME}"
  "${KIND}" delete cluster --name "${CLUSTER_NAME}"
fi
if [[ "${KEEP_REGISTRY:-0}" != "1" ]] && docker inspect "${REGISTRY_NAME}" >/dev/null 2>&1; then
  log "remove registry ${REGISTRY_NAME}"
  docker rm -f "${REGISTRY_NAME}" >/dev/null
fi
rm -f "${IMAGE_ENV}"
