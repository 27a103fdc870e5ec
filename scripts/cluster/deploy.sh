#!/usr/bin/env bash
# `make deploy`: Secrets (generated here, never written to git or to a file that outlives this script),
# then the project (deploy/kind = knative/ + knative/platform/ + istio/) with the function image pinned
# by digest, then waits until the database is initialised and every function is Ready.
# Idempotent: existing Secrets are kept (ROTATE_JWT_KEY=1 replaces the signing key), manifests are
# re-applied, the db-init Job is re-run.
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need openssl
[[ -x "${KUBECTL}" ]] || die "no pinned kubectl: run \`make kind-up\` first"
[[ -x "${VENV_PYTHON}" ]] || die "no .venv: run \`make venv\` first"
[[ -f "${IMAGE_ENV}" ]] || die "no function image recorded: run \`make images\` first"
# shellcheck source=/dev/null
source "${IMAGE_ENV}"
[[ "${FUNCTION_IMAGE_DIGEST:-}" == sha256:* ]] || die "${IMAGE_ENV} has no image digest"

secrets_dir="$(mktemp -d)"
trap 'rm -rf "${secrets_dir}"' EXIT
chmod 700 "${secrets_dir}"

# Applies `kubectl create secret generic NAME ARGS...` declaratively (create or update).
apply_secret() {
  local name="$1"
  shift
  k -n "${NAMESPACE}" create secret generic "${name}" "$@" --dry-run=client -o yaml | k apply -f -
}

has_secret() {
  k -n "${NAMESPACE}" get secret "$1" >/dev/null 2>&1
}

k apply -f "${ROOT}/knative/namespace.yaml"

# The RSA key that auth-api signs access tokens with. Generated once; kept across deploys so issued
# tokens stay valid. Its public half is served at /.well-known/jwks.json, which every validator reads.
if [[ "${ROTATE_JWT_KEY:-0}" == "1" ]] || ! has_secret saga-jwt-signing-key; then
  log "generate the JWT signing key (RSA 2048)"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "${secrets_dir}/private-key.pem" 2>/dev/null
  apply_secret saga-jwt-signing-key --from-file=private-key.pem="${secrets_dir}/private-key.pem"
fi

# Database credentials: a random password, generated once (PostgreSQL keeps the first one it was
# initialised with). Passed through a 0600 file, not the command line, so `ps` never shows it.
if ! has_secret saga-database; then
  log "generate the database credentials"
  password="$(openssl rand -hex 24)"
  url="postgresql://saga:${password}@saga-postgres.${NAMESPACE}.svc.cluster.local:5432/saga"
  umask 077
  {
    echo "username=saga"
    echo "password=${password}"
    # One database, one schema per service; each function gets its own key so they can be split.
    for key in order-url goods-url account-url auth-url admin-url; do
      echo "${key}=${url}"
    done
  } >"${secrets_dir}/database.env"
  unset password url
  apply_secret saga-database --from-env-file="${secrets_dir}/database.env"
fi
rm -rf "${secrets_dir:?}"/*

# The project, with the image the last `make images` pushed, pinned by digest.
render_dir="${STATE_DIR}/deploy"
kustomization deploy "${render_dir}" --image "${FUNCTION_IMAGE}" --digest "${FUNCTION_IMAGE_DIGEST}"
log "apply deploy/kind with ${FUNCTION_IMAGE}@${FUNCTION_IMAGE_DIGEST} (${FUNCTION_IMAGE_TAG:-})"
# A Job's pod template is immutable: replace the db-init Job so it runs with this image.
k -n "${NAMESPACE}" delete job saga-db-init --ignore-not-found --wait=true
k apply -k "${render_dir}"

log "wait for Kafka and PostgreSQL"
k -n "${NAMESPACE}" rollout status statefulset/saga-kafka --timeout=600s
k -n "${NAMESPACE}" rollout status statefulset/saga-postgres --timeout=600s
log "wait for the schemas (job/saga-db-init)"
k -n "${NAMESPACE}" wait job/saga-db-init --for=condition=Complete --timeout=600s
log "wait for the broker, the dead-letter sink, the Triggers and every function"
k -n "${NAMESPACE}" wait kafkasink --all --for=condition=Ready --timeout=600s
k -n "${NAMESPACE}" wait broker/saga --for=condition=Ready --timeout=600s
k -n "${NAMESPACE}" wait ksvc --all --for=condition=Ready --timeout=600s
k -n "${NAMESPACE}" wait trigger --all --for=condition=Ready --timeout=600s
k -n "${NAMESPACE}" wait sinkbinding --all --for=condition=Ready --timeout=600s
k -n "${NAMESPACE}" wait pingsource --all --for=condition=Ready --timeout=600s
log "deployed: \`make e2e-kind\` runs the end-to-end tests through http://127.0.0.1:${INGRESS_HTTP_PORT} (Host ${INGRESS_HOST})"
