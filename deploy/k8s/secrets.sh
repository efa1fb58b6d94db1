#!/usr/bin/env bash
# Creates the Secrets that deploy/k8s mounts. Needs musterctl and kubectl; keep $TLS_DIR safe
# (it holds the CA key, the worker CA key and the operator certificate).
#
#   deploy/k8s/secrets.sh tls          CA and certificates (musterctl tls init) -> the *-tls Secrets
#   deploy/k8s/secrets.sh renew        re-issue them (musterctl tls renew) -> the same Secrets; the
#                                      pods load the new files without a restart (kubelet updates
#                                      the mounted Secrets within about a minute)
#   deploy/k8s/secrets.sh rotate-ca STEP  one step of a cluster CA rotation (musterctl tls
#                                      rotate-ca begin|reissue|finish) -> the same Secrets
#   deploy/k8s/secrets.sh token FILE   a bootstrap token file -> muster-worker-token
#
# The token needs the running control plane, and tokens are written on the leader, which
# redirects by in-cluster names; from outside, forward the leader's pod (node id N is pod N-1):
#   kubectl -n muster port-forward pod/muster-control-plane-0 3669 &
#   musterctl --tls-dir "$TLS_DIR" --endpoints 127.0.0.1:3669 cluster leader
#   musterctl --tls-dir "$TLS_DIR" --endpoints 127.0.0.1:3669 token create --uses 1000 --ttl 24h --out worker.token
set -euo pipefail

namespace=${NAMESPACE:-muster}
dir=${TLS_DIR:-./muster-tls}

# Every name dialed over TLS with the name checked: the control plane's client Service and
# per-pod peer names, and the registrar's Service. Gateways are checked by role, not by name.
control_plane_hosts=muster-control-plane,muster-control-plane-0.muster-control-plane-peers,muster-control-plane-1.muster-control-plane-peers,muster-control-plane-2.muster-control-plane-peers
registrar_hosts=muster-registrar

create() { # SECRET FILE...: the files of $dir, each under its own name
  local name=$1 args=()
  shift
  for file in "$@"; do args+=("--from-file=$file=$dir/$file"); done
  kubectl -n "$namespace" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml | kubectl apply -f -
}

tls_secrets() { # the component Secrets from $dir
  create muster-control-plane-tls ca.pem control-plane.pem control-plane-key.pem
  # The worker CA key goes to the registrar only (never to gateways or the control plane).
  create muster-registrar-tls ca.pem registrar.pem registrar-key.pem worker-ca.pem worker-ca-key.pem
  create muster-heartbeat-gateway-tls ca.pem heartbeat-gateway.pem heartbeat-gateway-key.pem
}

case ${1:-} in
  tls)
    musterctl tls init --dir "$dir" \
      --node "control-plane=$control_plane_hosts" \
      --component "registrar:registrar=$registrar_hosts" \
      --component "gateway:heartbeat-gateway"
    kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"
    tls_secrets
    ;;
  renew)
    musterctl tls renew --dir "$dir" ${VALIDITY:+--validity "$VALIDITY"}
    tls_secrets
    ;;
  rotate-ca)
    [[ ${2:-} =~ ^(begin|reissue|finish)$ ]] || { echo "usage: $0 rotate-ca begin|reissue|finish" >&2; exit 2; }
    musterctl tls rotate-ca "$2" --dir "$dir"
    tls_secrets
    ;;
  token)
    [[ -f ${2:-} ]] || { echo "usage: $0 token FILE (from musterctl token create --out FILE)" >&2; exit 2; }
    kubectl -n "$namespace" create secret generic muster-worker-token --from-file="token=$2" \
      --dry-run=client -o yaml | kubectl apply -f -
    ;;
  *)
    echo "usage: $0 tls | renew | rotate-ca STEP | token FILE" >&2
    exit 2
    ;;
esac
