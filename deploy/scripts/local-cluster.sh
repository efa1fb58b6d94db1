#!/usr/bin/env bash
# Starts (or stops) a local Muster worker tier with mTLS, for trying Muster on one machine:
# 3 control-plane nodes (worker-tier, role server), a registrar, a heartbeat gateway and 3
# worker agents that join with a token the script creates. Everything lives under
# $MUSTER_LOCAL_DIR (default ./.muster-local).
#
#   deploy/scripts/local-cluster.sh start    build, generate certificates, start everything
#   deploy/scripts/local-cluster.sh status   show the cluster and its workers
#   deploy/scripts/local-cluster.sh stop     stop every process (data is kept)
#   deploy/scripts/local-cluster.sh clean    stop and delete all data
#
# Ports on 127.0.0.1: nodes 13668/13669/13680, 23668/23669/23680, 33668/33669/33680 (Raft,
# API, admin), registrar 13670 (admin 13681), gateway 13671 (admin 13682), agents' admin
# 13683-13685. MUSTER_LOCAL_BASE_PORT=B moves them all to B..B+36 instead (node n: B+10(n-1)
# Raft, +1 API, +2 admin; registrar B+30/B+31, gateway B+32/B+33, agents B+34..B+36).
# MUSTER_BIN_DIR=DIR uses binaries already built there instead of `cargo build --release`.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${MUSTER_LOCAL_DIR:-$root/.muster-local}
dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
bin=${MUSTER_BIN_DIR:-$root/target/release}
base=${MUSTER_LOCAL_BASE_PORT:-}
agents=(1 2 3)

# port ROLE [N]: the port of a listener (see the header).
port() {
  local role=$1 n=${2:-0}
  if [[ -n $base ]]; then
    case $role in
      raft) echo $((base + 10 * (n - 1))) ;;
      api) echo $((base + 10 * (n - 1) + 1)) ;;
      admin) echo $((base + 10 * (n - 1) + 2)) ;;
      registrar) echo $((base + 30)) ;;
      registrar-admin) echo $((base + 31)) ;;
      gateway) echo $((base + 32)) ;;
      gateway-admin) echo $((base + 33)) ;;
      agent-admin) echo $((base + 33 + n)) ;;
    esac
  else
    case $role in
      raft) echo "${n}3668" ;;
      api) echo "${n}3669" ;;
      admin) echo "${n}3680" ;;
      registrar) echo 13670 ;;
      registrar-admin) echo 13681 ;;
      gateway) echo 13671 ;;
      gateway-admin) echo 13682 ;;
      agent-admin) echo $((13682 + n)) ;;
    esac
  fi
}

endpoints="127.0.0.1:$(port api 1),127.0.0.1:$(port api 2),127.0.0.1:$(port api 3)"
endpoints_toml="[\"127.0.0.1:$(port api 1)\", \"127.0.0.1:$(port api 2)\", \"127.0.0.1:$(port api 3)\"]"
ctl() { "$bin/musterctl" --tls-dir "$dir/tls" --endpoints "$endpoints" "$@"; }

# launch NAME COMMAND...: starts a process in the background unless NAME is running.
launch() {
  local name=$1
  shift
  if [[ -f $dir/$name.pid ]] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$dir/$name.pid"))"
    return
  fi
  nohup "$@" > "$dir/$name.log" 2>&1 &
  echo $! > "$dir/$name.pid"
  echo "started $name (pid $!, log $dir/$name.log)"
}

# healthy BINARY NAMES PORTS: waits up to 60 s until each admin listener in PORTS (space
# separated) is ready; stops early, with its log, if a process in NAMES has exited.
healthy() {
  local binary=$1 names=$2 ports=$3
  for _ in $(seq 1 300); do
    for name in $names; do
      if ! kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
        echo "$name exited; the end of $dir/$name.log:" >&2
        tail -5 "$dir/$name.log" >&2
        return 1
      fi
    done
    local all=1
    for p in $ports; do
      "$bin/$binary" health --admin-addr "127.0.0.1:$p" >/dev/null 2>&1 || all=0
    done
    ((all)) && return 0
    sleep 0.2
  done
  echo "$binary did not become ready; see $dir/*.log" >&2
  return 1
}

tls_section() {
  printf '[tls]\nca_file = "%s"\ncert_file = "%s"\nkey_file = "%s"\n' "$dir/tls/ca.pem" "$dir/tls/$1.pem" "$dir/tls/$1-key.pem"
}

start() {
  if [[ -z ${MUSTER_BIN_DIR:-} ]]; then
    (cd "$root" && cargo build --release --bins -p muster-control-plane -p musterctl -p muster-registrar \
      -p muster-heartbeat-gateway -p muster-worker-agent)
  fi
  # Idempotent: keeps what exists and adds what is missing (e.g. the worker CA of older dirs).
  "$bin/musterctl" tls init --dir "$dir/tls" --node node1 --node node2 --node node3 \
    --component registrar:registrar --component gateway:gateway
  for id in 1 2 3; do
    cat > "$dir/node$id.toml" <<TOML
data_dir = "$dir/data/node$id"

[cluster]
mode = "worker-tier"
role = "server"
node_id = $id
peers = [
  { id = 1, raft_addr = "127.0.0.1:$(port raft 1)", api_addr = "127.0.0.1:$(port api 1)" },
  { id = 2, raft_addr = "127.0.0.1:$(port raft 2)", api_addr = "127.0.0.1:$(port api 2)" },
  { id = 3, raft_addr = "127.0.0.1:$(port raft 3)", api_addr = "127.0.0.1:$(port api 3)" },
]

[listen]
raft_addr = "127.0.0.1:$(port raft "$id")"
api_addr = "127.0.0.1:$(port api "$id")"
admin_addr = "127.0.0.1:$(port admin "$id")"

$(tls_section "node$id")
TOML
    launch "node$id" "$bin/control-plane" --config "$dir/node$id.toml"
  done
  healthy control-plane "node1 node2 node3" "$(port admin 1) $(port admin 2) $(port admin 3)"

  cat > "$dir/registrar.toml" <<TOML
worker_grpc_addr = "127.0.0.1:$(port registrar)"
admin_addr = "127.0.0.1:$(port registrar-admin)"
control_plane = $endpoints_toml
worker_ca_cert_file = "$dir/tls/worker-ca.pem"
worker_ca_key_file = "$dir/tls/worker-ca-key.pem"

$(tls_section registrar)
TOML
  launch registrar "$bin/registrar" --config "$dir/registrar.toml"
  cat > "$dir/gateway.toml" <<TOML
listen_addr = "127.0.0.1:$(port gateway)"
admin_addr = "127.0.0.1:$(port gateway-admin)"
control_plane = $endpoints_toml

$(tls_section gateway)
TOML
  launch gateway "$bin/heartbeat-gateway" --config "$dir/gateway.toml"
  healthy registrar registrar "$(port registrar-admin)"
  healthy heartbeat-gateway gateway "$(port gateway-admin)"

  # One token for the three agents; an agent with a saved identity never needs it again.
  [[ -f $dir/worker.token ]] || ctl token create --uses ${#agents[@]} --ttl 24h --label local=true --out "$dir/worker.token"
  for n in "${agents[@]}"; do
    cat > "$dir/agent$n.toml" <<TOML
data_dir = "$dir/data/agent$n"
admin_addr = "127.0.0.1:$(port agent-admin "$n")"
hostname = "local-agent-$n"

[cluster]
mode = "worker-tier"
role = "worker"
servers = ["127.0.0.1:$(port registrar)"]
token_file = "$dir/worker.token"
TOML
    launch "agent$n" "$bin/worker-agent" --config "$dir/agent$n.toml"
  done
  local agent_ports="" agent_names=""
  for n in "${agents[@]}"; do agent_ports+=" $(port agent-admin "$n")"; agent_names+=" agent$n"; done
  healthy worker-agent "$agent_names" "$agent_ports"
  ctl cluster status
  echo
  ctl workers list
  echo
  echo "try: $bin/musterctl --tls-dir $dir/tls --endpoints $endpoints workers list"
}

stop() {
  # Agents first (they report a graceful leave), the control plane last.
  for name in agent1 agent2 agent3 gateway registrar node1 node2 node3; do
    if [[ -f $dir/$name.pid ]]; then
      local pid
      pid=$(cat "$dir/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$dir/$name.pid"
    fi
  done
}

case ${1:-start} in
  start) start ;;
  status) ctl cluster status; echo; ctl workers list ;;
  stop) stop ;;
  clean) stop; rm -rf "$dir" ;;
  *) echo "usage: $0 start|status|stop|clean" >&2; exit 2 ;;
esac
