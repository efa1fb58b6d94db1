#!/usr/bin/env bash
# Starts compose.yaml (3 control-plane nodes, registrar, heartbeat gateway, 3 worker agents)
# and waits until every service is healthy and the one-shots have succeeded.
#
#   deploy/scripts/compose-up.sh [--build] [--tracing] [UP ARGS...]
#
#   --build     rebuild the images (deploy/scripts/build-images.sh) even if they exist
#   --tracing   also start Jaeger (profile "tracing") and export traces to it; without the
#               Jaeger image (none can be pulled offline) it starts without it and says so
#   UP ARGS     passed to `compose up -d`, e.g. --scale heartbeat-gateway=3 --scale worker-agent=6
#
# Then copies the CA and operator certificate out of the pki volume to
# .muster-local/compose/tls ($MUSTER_LOCAL_DIR/tls when set) and prints how to reach the
# cluster from the host. COMPOSE_PROJECT_NAME and MUSTER_API_PORT_1..3 are honoured, so a
# second stack (the test suite's) can run beside this one.
# Stop: docker compose down (keeps data), docker compose down -v (deletes everything).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

build=0
tracing=0
up_args=()
while (($#)); do
  case $1 in
    --build) build=1 ;;
    --tracing) tracing=1 ;;
    *) up_args+=("$1") ;;
  esac
  shift
done

jaeger_image=$(sed -n 's/^ *image: *\(jaegertracing\/[^ ]*\).*/\1/p' compose.yaml | awk 'NR==1')
add_jaeger="docker pull $jaeger_image (needs a registry), then deploy/scripts/compose-up.sh --tracing"
if ((tracing)); then
  if docker image inspect "$jaeger_image" >/dev/null 2>&1 || docker pull "$jaeger_image" >/dev/null 2>&1; then
    export COMPOSE_PROFILES=${COMPOSE_PROFILES:+$COMPOSE_PROFILES,}tracing
    export OTEL_EXPORTER_OTLP_ENDPOINT=${OTEL_EXPORTER_OTLP_ENDPOINT:-http://jaeger:4317}
  else
    echo "warning: the Jaeger image $jaeger_image is not here and cannot be pulled;" \
      "starting without tracing. To add it: $add_jaeger" >&2
    tracing=0
  fi
fi

# Compose v2 if the plugin is there, else v1.29 (Debian's docker-compose).
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "neither 'docker compose' nor 'docker-compose' found" >&2
  exit 1
fi

tag=${MUSTER_TAG:-dev}
missing=()
for bin in control-plane registrar heartbeat-gateway worker-agent musterctl; do
  docker image inspect "muster/$bin:$tag" >/dev/null 2>&1 || missing+=("$bin")
done
if ((build)); then
  TAG=$tag deploy/scripts/build-images.sh
elif ((${#missing[@]})); then
  echo "==> building missing images: ${missing[*]}"
  TAG=$tag deploy/scripts/build-images.sh "${missing[@]}"
fi

echo "==> ${compose[*]} up -d ${up_args[*]}"
"${compose[@]}" up -d --no-build --remove-orphans "${up_args[@]}"

# `up --wait` exists only in v2; this works with both. Long-running containers must be
# healthy, the one-shots (pki, token) exited 0.
echo "==> waiting for every container to be healthy"
deadline=$((SECONDS + ${WAIT_SECONDS:-180}))
while :; do
  pending=()
  failed=()
  for id in $("${compose[@]}" ps -q); do
    read -r name status health exit_code restart < <(docker inspect -f \
      '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}} {{.HostConfig.RestartPolicy.Name}}' "$id")
    name=${name#/}
    if [[ $status == exited && ( $restart == no || $restart == "" ) ]]; then
      [[ $exit_code == 0 ]] || failed+=("$name (exit $exit_code)")
    elif [[ $status != running ]]; then
      pending+=("$name ($status)")
    elif [[ $health != healthy && $health != none ]]; then
      pending+=("$name ($health)")
    fi
  done
  if ((${#failed[@]})); then
    echo "failed: ${failed[*]}" >&2
    "${compose[@]}" ps >&2
    exit 1
  fi
  ((${#pending[@]} == 0)) && break
  if ((SECONDS >= deadline)); then
    echo "still not healthy after ${WAIT_SECONDS:-180}s: ${pending[*]}" >&2
    "${compose[@]}" ps >&2
    echo "logs: ${compose[*]} logs <service>" >&2
    exit 1
  fi
  sleep 2
done
"${compose[@]}" ps

# The operator's certificate, for musterctl and grpcurl on the host.
tls=${MUSTER_LOCAL_DIR:-$root/.muster-local/compose}/tls
mkdir -p "$tls"
pki=$("${compose[@]}" ps -a -q pki | awk 'NR==1')
for file in ca.pem operator.pem operator-key.pem; do
  docker cp "$pki:/etc/muster/tls/$file" "$tls/$file" >/dev/null
done
chmod 0600 "$tls/operator-key.pem"

ports=${MUSTER_API_PORT_1:-13669},${MUSTER_API_PORT_2:-23669},${MUSTER_API_PORT_3:-33669}
endpoints=127.0.0.1:${ports//,/,127.0.0.1:}
rel_tls=${tls#"$root"/}
cat <<TEXT

Muster is up (${compose[*]}; project ${COMPOSE_PROJECT_NAME:-$(basename "$root")}). From the host, with the operator
certificate copied to $rel_tls:

  target/release/musterctl --tls-dir $rel_tls --endpoints $endpoints workers list
  target/release/musterctl --tls-dir $rel_tls --endpoints $endpoints cluster status

or on the compose network, with nothing on the host:

  ${compose[*]} run --rm musterctl workers list
  ${compose[*]} run --rm musterctl -o json workers list

grpcurl (health and reflection need no client certificate):

  grpcurl -cacert $rel_tls/ca.pem 127.0.0.1:${MUSTER_API_PORT_1:-13669} grpc.health.v1.Health/Check
  grpcurl -cacert $rel_tls/ca.pem -cert $rel_tls/operator.pem -key $rel_tls/operator-key.pem \\
    127.0.0.1:${MUSTER_API_PORT_1:-13669} muster.v1.ClusterManagementService/GetClusterMetadata

Scale: ${compose[*]} up -d --scale heartbeat-gateway=3 --scale worker-agent=6
Stop:  ${compose[*]} down        (data kept)    ${compose[*]} down -v   (everything deleted)
TEXT
if ((tracing)); then
  echo "Traces: http://127.0.0.1:16686 (Jaeger)"
elif [[ -n ${OTEL_EXPORTER_OTLP_ENDPOINT:-} ]]; then
  echo "Traces: exported to $OTEL_EXPORTER_OTLP_ENDPOINT"
else
  echo "Traces: off. To see them in Jaeger: $add_jaeger"
fi
