#!/usr/bin/env bash
# Starts (or stops) a local 3-node Muster control plane with mTLS, for trying Muster on one
# machine. Everything lives under $MUSTER_LOCAL_DIR (default ./.muster-local).
#
#   deploy/scripts/local-cluster.sh start    build, generate certificates, start 3 nodes
#   deploy/scripts/local-cluster.sh status   show the cluster
#   deploy/scripts/local-cluster.sh stop     stop the nodes (data is kept)
#   deploy/scripts/local-cluster.sh clean    stop and delete all data
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${MUSTER_LOCAL_DIR:-$root/.muster-local}
bin=$root/target/release

ctl() { "$bin/musterctl" --tls-dir "$dir/tls" --endpoints 127.0.0.1:13669,127.0.0.1:23669,127.0.0.1:33669 "$@"; }

start() {
  (cd "$root" && cargo build --release --bins -p muster-control-plane -p musterctl)
  mkdir -p "$dir"
  # Idempotent: keeps what exists and adds what is missing (e.g. the worker CA of older dirs).
  "$bin/musterctl" tls init --dir "$dir/tls" --node node1 --node node2 --node node3
  for id in 1 2 3; do
    if [[ -f $dir/node$id.pid ]] && kill -0 "$(cat "$dir/node$id.pid")" 2>/dev/null; then
      echo "node $id already running (pid $(cat "$dir/node$id.pid"))"
      continue
    fi
    cat > "$dir/node$id.toml" <<TOML
data_dir = "$dir/data/node$id"

[cluster]
mode = "raft"
node_id = $id
peers = [
  { id = 1, raft_addr = "127.0.0.1:13668", api_addr = "127.0.0.1:13669" },
  { id = 2, raft_addr = "127.0.0.1:23668", api_addr = "127.0.0.1:23669" },
  { id = 3, raft_addr = "127.0.0.1:33668", api_addr = "127.0.0.1:33669" },
]

[listen]
raft_addr = "127.0.0.1:${id}3668"
api_addr = "127.0.0.1:${id}3669"
admin_addr = "127.0.0.1:${id}3680"

[tls]
ca_file = "$dir/tls/ca.pem"
cert_file = "$dir/tls/node$id.pem"
key_file = "$dir/tls/node$id-key.pem"
TOML
    nohup "$bin/control-plane" --config "$dir/node$id.toml" > "$dir/node$id.log" 2>&1 &
    echo $! > "$dir/node$id.pid"
    echo "started node $id (pid $!, log $dir/node$id.log)"
  done
  for _ in $(seq 1 100); do
    if "$bin/control-plane" health --admin-addr 127.0.0.1:13680 >/dev/null 2>&1 &&
       "$bin/control-plane" health --admin-addr 127.0.0.1:23680 >/dev/null 2>&1 &&
       "$bin/control-plane" health --admin-addr 127.0.0.1:33680 >/dev/null 2>&1; then
      ctl cluster status
      echo
      echo "try: $bin/musterctl --tls-dir $dir/tls --endpoints 127.0.0.1:13669 kv put hello world"
      return 0
    fi
    sleep 0.2
  done
  echo "cluster did not become ready; see $dir/node*.log" >&2
  return 1
}

stop() {
  for id in 1 2 3; do
    if [[ -f $dir/node$id.pid ]]; then
      kill "$(cat "$dir/node$id.pid")" 2>/dev/null || true
      rm -f "$dir/node$id.pid"
    fi
  done
}

case ${1:-start} in
  start) start ;;
  status) ctl cluster status ;;
  stop) stop ;;
  clean) stop; rm -rf "$dir" ;;
  *) echo "usage: $0 start|status|stop|clean" >&2; exit 2 ;;
esac
