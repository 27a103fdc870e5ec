#!/usr/bin/env bash
# Installs the pinned kind, kubectl and istioctl into .local/cluster/bin (checksums verified where the
# project publishes them). Idempotent: a tool already at the pinned version is left alone.
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need curl tar sha256sum
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac
mkdir -p "${TOOLS_DIR}"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

# download URL FILE: fetch to FILE, failing on HTTP errors.
download() {
  curl --fail --silent --show-error --location --retry 3 -o "$2" "$1"
}

if ! "${KIND}" version 2>/dev/null | grep -q "kind ${KIND_VERSION} "; then
  log "install kind ${KIND_VERSION}"
  base="https://github.com/kubernetes-sigs/kind/releases/download/${KIND_VERSION}/kind-${os}-${arch}"
  download "${base}" "${tmp}/kind"
  download "${base}.sha256sum" "${tmp}/kind.sha256sum"
  echo "$(cut -d' ' -f1 "${tmp}/kind.sha256sum")  ${tmp}/kind" | sha256sum --check --quiet
  install -m 0755 "${tmp}/kind" "${KIND}"
fi

if ! "${KUBECTL}" version --client 2>/dev/null | grep -q "Client Version: ${KUBECTL_VERSION}$"; then
  log "install kubectl ${KUBECTL_VERSION}"
  base="https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/${os}/${arch}/kubectl"
  download "${base}" "${tmp}/kubectl"
  download "${base}.sha256" "${tmp}/kubectl.sha256"
  echo "$(cat "${tmp}/kubectl.sha256")  ${tmp}/kubectl" | sha256sum --check --quiet
  install -m 0755 "${tmp}/kubectl" "${KUBECTL}"
fi

if ! "${ISTIOCTL}" version --remote=false 2>/dev/null | grep -qF "${ISTIO_VERSION}"; then
  log "install istioctl ${ISTIO_VERSION}"
  name="istioctl-${ISTIO_VERSION}-${os}-${arch}.tar.gz"
  base="https://github.com/istio/istio/releases/download/${ISTIO_VERSION}/${name}"
  download "${base}" "${tmp}/${name}"
  download "${base}.sha256" "${tmp}/${name}.sha256"
  echo "$(cut -d' ' -f1 "${tmp}/${name}.sha256")  ${tmp}/${name}" | sha256sum --check --quiet
  tar -xzf "${tmp}/${name}" -C "${tmp}" istioctl
  install -m 0755 "${tmp}/istioctl" "${ISTIOCTL}"
fi
log "tools ready in ${TOOLS_DIR}"
