#!/usr/bin/env bash
# `make kind-up`: the local registry, the kind cluster, and the platform (Istio, Knative Serving with
# net-istio, Knative Eventing with the Kafka broker), every version pinned in versions.env.
# Idempotent: what exists is left alone, manifests are re-applied server-side (a no-op when unchanged).
set -euo pipefail
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need docker
"${ROOT}/scripts/cluster/tools.sh"

SERVING="https://github.com/knative/serving/releases/download/${KNATIVE_SERVING_VERSION}"
NET_ISTIO="https://github.com/knative-extensions/net-istio/releases/download/${KNATIVE_NET_ISTIO_VERSION}"
EVENTING="https://github.com/knative/eventing/releases/download/${KNATIVE_EVENTING_VERSION}"
KAFKA_BROKER="https://github.com/knative-extensions/eventing-kafka-broker/releases/download/${KNATIVE_KAFKA_BROKER_VERSION}"

# 1. The local registry: a registry container on the host, published on 127.0.0.1:5001.
if [[ "$(docker inspect -f '{{.State.Running}}' "${REGISTRY_NAME}" 2>/dev/null || true)" != "true" ]]; then
  if docker inspect "${REGISTRY_NAME}" >/dev/null 2>&1; then
    log "start registry ${REGISTRY_NAME}"
    docker start "${REGISTRY_NAME}" >/dev/null
  else
    log "run registry ${REGISTRY_NAME} (${REGISTRY_IMAGE}) on 127.0.0.1:${REGISTRY_PORT}"
    docker run -d --restart=always -p "127.0.0.1:${REGISTRY_PORT}:5000" --network bridge \
      --name "${REGISTRY_NAME}" "${REGISTRY_IMAGE}" >/dev/null
  fi
fi

# 2. The cluster (kind-config.yaml: node image pinned by digest, ingress ports, containerd certs.d).
if ! "${KIND}" get clusters 2>/dev/null | grep -qx "${CLUSTER_NAME}"; then
  log "create kind cluster ${CLUSTER_NAME}"
  "${KIND}" create cluster --name "${CLUSTER_NAME}" --config "${ROOT}/kind-config.yaml" \
    --image "${KIND_NODE_IMAGE}" --wait 180s
fi

# 3. Wire the registry into every node: localhost:5001 inside a node means the registry container.
for node in $("${KIND}" get nodes --name "${CLUSTER_NAME}"); do
  docker exec "${node}" mkdir -p "/etc/containerd/certs.d/localhost:${REGISTRY_PORT}"
  printf '[host."http://%s:5000"]\n' "${REGISTRY_NAME}" |
    docker exec -i "${node}" cp /dev/stdin "/etc/containerd/certs.d/localhost:${REGISTRY_PORT}/hosts.toml"
done
if [[ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "${REGISTRY_NAME}")" == "null" ]]; then
  docker network connect kind "${REGISTRY_NAME}"
fi
# Documents the registry for tools that look for it (KEP-1755). kubectl writes the ConfigMap; the
# value is the KEP's small YAML document, its strings quoted.
k -n kube-public create configmap local-registry-hosting --dry-run=client -o yaml \
  --from-literal=localRegistryHosting.v1="$(printf 'host: "localhost:%s"\nhelp: "%s"\n' "${REGISTRY_PORT}" \
    "https://kind.sigs.k8s.io/docs/user/local-registry/")" | k apply -f -

# 4. Knative Serving's CRDs, then Istio (before Serving's pods, so the activator gets its sidecar).
apply_release "${SERVING}/serving-crds.yaml"
k wait --for=condition=Established crd --all --timeout=180s
log "istioctl install ${ISTIO_VERSION} (istio/install/istio-kind.yaml)"
"${ISTIOCTL}" install --context "${KUBE_CONTEXT}" -y -f "${ROOT}/istio/install/istio-kind.yaml"
wait_deployments istio-system
# istio-cni's node agent must run on every node before a meshed pod starts: it, not an init
# container, redirects the pod's traffic (knative-saga enforces the restricted Pod Security Standard).
k -n istio-system rollout status daemonset/istio-cni-node --timeout=300s

# 5. knative-serving in the mesh: under STRICT mTLS the activator, which proxies requests to functions
# scaled to zero, must present a mesh identity (Knative's "Mutual TLS in Knative" docs).
k create namespace knative-serving --dry-run=client -o yaml | k apply -f -
k label namespace knative-serving istio-injection=enabled --overwrite
apply_release "${SERVING}/serving-core.yaml"
apply_release "${NET_ISTIO}/net-istio.yaml"
# Images in the local registry are pinned by digest at deploy time; Knative's controller must not try
# to resolve tags against localhost:5001, which it cannot reach from its pod.
k -n knative-serving patch configmap config-deployment --type merge \
  -p "{\"data\":{\"registries-skipping-tag-resolving\":\"kind.local,ko.local,dev.local,localhost:${REGISTRY_PORT}\"}}"
wait_deployments knative-serving

# 6. Knative Eventing and the Kafka broker (controller, broker data plane, KafkaSink data plane).
# knative-eventing stays outside the mesh: its dispatchers reach the functions through
# knative-local-gateway (which speaks mTLS to the pods) and the functions reach its broker ingress with
# Istio's auto mTLS falling back to plaintext; its webhooks need no PERMISSIVE exception this way.
apply_release "${EVENTING}/eventing-crds.yaml"
k wait --for=condition=Established crd --all --timeout=180s
apply_release "${EVENTING}/eventing-core.yaml"
apply_release "${KAFKA_BROKER}/eventing-kafka-controller.yaml"
apply_release "${KAFKA_BROKER}/eventing-kafka-broker.yaml"
apply_release "${KAFKA_BROKER}/eventing-kafka-sink.yaml"
wait_deployments knative-eventing

log "platform ready: next \`make deploy\`"
