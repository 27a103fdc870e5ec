#!/usr/bin/env bash
# `make e2e-kind`: the end-to-end tests through the Istio ingress gateway of the kind cluster.
# First a smoke check of the gateway's JWT rules with a token from the auth function, then
# tests/e2e (which registers its own users: the cluster has no default credential, so the admin-only
# tests run only when SAGA_E2E_ADMIN_TOKEN is set, and are skipped otherwise).
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need curl
python="${ROOT}/.venv/bin/python"
[[ -x "${python}" ]] || die "no .venv: run \`make venv\` first"
base="http://127.0.0.1:${INGRESS_HTTP_PORT}"

# call METHOD PATH [curl args...]: the HTTP status of a request to the gateway for the project's host.
call() {
  local method="$1" path="$2"
  shift 2
  curl --silent --output /dev/null --write-out '%{http_code}' --max-time 60 \
    --header "Host: ${INGRESS_HOST}" --request "${method}" "$@" "${base}${path}"
}

log "smoke: a request without a token is refused by the gateway"
status="$(call GET /goods/1)"
[[ "${status}" == "403" ]] || die "GET /goods/1 without a token answered ${status}, expected 403"

log "smoke: register a user and log in through the gateway"
user="e2e-kind-$(date +%s)-${RANDOM}"
password="$("${python}" -c 'import secrets; print(secrets.token_hex(16))')"
body="{\"username\": \"${user}\", \"password\": \"${password}\"}"
status="$(call POST /auth/register --header 'Content-Type: application/json' --data "${body}")"
[[ "${status}" == "201" ]] || die "POST /auth/register answered ${status}"
token="$(curl --silent --fail --max-time 60 --header "Host: ${INGRESS_HOST}" \
  --header 'Content-Type: application/json' --data "${body}" "${base}/auth/login" |
  "${python}" -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
# The first authenticated call may come before the gateway's and the function's proxies have the
# JWKS (fetched from auth-api, itself possibly scaled to zero; a valid token is refused meanwhile):
# retried every 2 s, at most 30 times, no new attempt after 60 s.
status="$(until_status 200 30 60 2 call GET /goods/1 --header "Authorization: Bearer ${token}")"
[[ "${status}" == "200" ]] || die "GET /goods/1 with a token answered ${status}, expected 200 (retried up to 60 s)"
status="$(call GET /goods/1 --header "Authorization: Bearer ${token}x")"
[[ "${status}" == "401" ]] || die "GET /goods/1 with a forged token answered ${status}, expected 401"

log "tests/e2e through ${base} (Host ${INGRESS_HOST})"
export SAGA_E2E_BASE_URL="${base}"
export SAGA_E2E_HOST="${INGRESS_HOST}"
exec "${ROOT}/.venv/bin/pytest" "${ROOT}/tests/e2e" "$@"
