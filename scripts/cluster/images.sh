#!/usr/bin/env bash
# `make images`: builds the one function image (Dockerfile), tags it with the git revision, pushes it
# to the local registry and records its digest for deploy.sh. Re-running rebuilds from cache.
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need docker git
revision="$(git -C "${ROOT}" rev-parse --short=12 HEAD)"
if ! git -C "${ROOT}" diff --quiet HEAD --; then
  revision="${revision}-dirty"  # uncommitted changes: never mistaken for the clean revision
fi
image="${FUNCTION_IMAGE}:${revision}"

log "build ${image}"
docker build --tag "${image}" "${ROOT}"
log "push ${image}"
docker push "${image}"

digest="$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "${image}" |
  grep "^${FUNCTION_IMAGE}@sha256:" | head -n 1 | cut -d@ -f2)"
[[ -n "${digest}" ]] || die "no registry digest for ${image}"
mkdir -p "${STATE_DIR}"
printf 'FUNCTION_IMAGE_TAG=%s\nFUNCTION_IMAGE_DIGEST=%s\n' "${revision}" "${digest}" >"${IMAGE_ENV}"
log "pushed ${image}@${digest}"
