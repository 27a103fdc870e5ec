#!/usr/bin/env bash
# `make replay`: run `saga replay` as a Job in the kind cluster and show its output.
#   make replay TRIGGER=order-saga FROM=earliest           one Trigger's history from the start
#   make replay FROM=2026-11-25T10:00:00Z                  every Trigger from a time
#   make replay DEAD_LETTERS=1 [TRIGGER=goods-reserve]      redrive the dead letters
#   ARGS='--dry-run'                                        anything else `saga replay` takes
# The Job (knative/replay/job/) runs the deployed function image with the saga-replay service account.
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -x "${KUBECTL}" ]] || die "no pinned kubectl: run \`make kind-up\` first"
[[ -f "${IMAGE_ENV}" ]] || die "no function image recorded: run \`make images\` first"
# shellcheck source=/dev/null
source "${IMAGE_ENV}"

args=()
if [[ "${DEAD_LETTERS:-0}" == "1" ]]; then
  args+=(--dead-letters)
  [[ -z "${TRIGGER:-}" ]] || args+=(--trigger "${TRIGGER}")
  [[ -z "${FROM:-}" ]] || args+=(--from "${FROM}")
else
  [[ -n "${FROM:-}" ]] || die "FROM is required: earliest, an RFC 3339 time or an offset"
  if [[ -n "${TRIGGER:-}" ]]; then args+=(--trigger "${TRIGGER}"); else args+=(--all-triggers); fi
  args+=(--from "${FROM}" --wait)
fi
if [[ -n "${ARGS:-}" ]]; then
  read -r -a extra <<<"${ARGS}"
  args+=("${extra[@]}")
fi
# The Job's name carries the time it was started: one Job per run, kept for a day (ttlSecondsAfterFinished).
suffix="$(date +%Y%m%d%H%M%S)"
job="$(kustomization replay "${STATE_DIR}/replay" --suffix "${suffix}" --image "${FUNCTION_IMAGE}" \
  --digest "${FUNCTION_IMAGE_DIGEST}" -- "${args[@]}")"
log "job ${job}: saga replay ${args[*]}"
k create -f <(k kustomize "${STATE_DIR}/replay")

# Bounded by the Job's activeDeadlineSeconds (3600 s); one look every 2 s.
for _ in $(seq 1 1900); do
  state="$(k -n "${NAMESPACE}" get job "${job}" \
    -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')"
  case "${state}" in
    *Complete*) k -n "${NAMESPACE}" logs "job/${job}"; exit 0 ;;
    *Failed*) k -n "${NAMESPACE}" logs "job/${job}" || true; die "job ${job} failed (${state})" ;;
  esac
  sleep 2
done
die "job ${job} still running; follow it with: kubectl -n ${NAMESPACE} logs -f job/${job}"
