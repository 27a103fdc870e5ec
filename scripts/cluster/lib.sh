#!/usr/bin/env bash
# Shared by scripts/cluster/*.sh: the repository root, the pinned versions, the pinned tools.
# Sourced, never run. Every caller sets `set -euo pipefail` itself.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ROOT
# shellcheck source=scripts/cluster/versions.env
source "${ROOT}/scripts/cluster/versions.env"

# Pinned tools (kind, kubectl, istioctl) live here, installed by scripts/cluster/tools.sh.
STATE_DIR="${ROOT}/.local/cluster"
TOOLS_DIR="${STATE_DIR}/bin"
KIND="${TOOLS_DIR}/kind"
KUBECTL="${TOOLS_DIR}/kubectl"
ISTIOCTL="${TOOLS_DIR}/istioctl"
KUBE_CONTEXT="kind-${CLUSTER_NAME}"
NAMESPACE=knative-saga
# Written by images.sh, read by deploy.sh: the function image pinned by digest.
IMAGE_ENV="${STATE_DIR}/image.env"
# The project's Python (`make venv`).
VENV_PYTHON="${ROOT}/.venv/bin/python"
export STATE_DIR TOOLS_DIR KIND KUBECTL ISTIOCTL KUBE_CONTEXT NAMESPACE IMAGE_ENV VENV_PYTHON

log() {
  printf '\033[1m==> %s\033[0m\n' "$*" >&2
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

need() {
  local tool
  for tool in "$@"; do
    command -v "${tool}" >/dev/null 2>&1 || die "needs ${tool} on PATH (see docs/deploy.md, prerequisites)"
  done
}

# kustomization deploy|replay OUT_DIR ARGS...: writes a generated kustomization from data
# (scripts/cluster/kustomizations.py), never by pasting values into YAML.
kustomization() {
  [[ -x "${VENV_PYTHON}" ]] || die "no .venv: run \`make venv\` first"
  "${VENV_PYTHON}" "${ROOT}/scripts/cluster/kustomizations.py" "$@"
}

# until_status WANT ATTEMPTS SECONDS INTERVAL COMMAND...: runs COMMAND, which prints an HTTP status,
# until it prints WANT: at most ATTEMPTS times, INTERVAL seconds apart, no new attempt once SECONDS
# have passed. Prints the last status (a failing COMMAND counts as an attempt; curl prints 000).
until_status() {
  local want="$1" attempts="$2" deadline=$((SECONDS + $3)) interval="$4" status="" attempt
  shift 4
  for ((attempt = 1; attempt <= attempts; attempt++)); do
    status="$("$@")" || true
    if [[ "${status}" == "${want}" ]] || ((attempt == attempts || SECONDS >= deadline)); then
      break
    fi
    log "answered ${status}, not ${want} (attempt ${attempt} of ${attempts}); again in ${interval} s"
    sleep "${interval}"
  done
  printf '%s\n' "${status}"
}

# kubectl against this project's kind cluster only, never the user's current context.
k() {
  "${KUBECTL}" --context "${KUBE_CONTEXT}" "$@"
}

# Apply a released manifest by URL, server-side so re-running is a no-op and big CRDs fit.
apply_release() {
  log "apply $1"
  k apply --server-side --force-conflicts -f "$1"
}

wait_deployments() {
  local namespace="$1"
  log "wait for every Deployment in ${namespace}"
  k -n "${namespace}" wait deployment --all --for=condition=Available --timeout=600s
}
