#!/usr/bin/env bash
# Builds the Muster images from binaries compiled here: no base image, nothing is pulled.
#
#   deploy/scripts/build-images.sh [BINARY...]     default: all five
#
# 1. cargo builds the deployables as statically linked glibc executables
#    (-C target-feature=+crt-static, target x86_64-unknown-linux-gnu) into $CARGO_TARGET_DIR
#    (default target/static, so it never fights over the normal target/ dir's lock),
# 2. stages them, debug info stripped, with an empty rootfs skeleton in target/docker-context
#    (the only build context: nothing else of the repository is sent to the daemon),
# 3. docker builds deploy/docker/Dockerfile once per binary, tagged muster/<binary>:$TAG
#    (default dev) and muster/<binary>:<workspace version> (what deploy/k8s/kustomization.yaml uses).
#
# SKIP_CARGO=1 reuses binaries already built. Needs gcc and libc6-dev (glibc's static libraries).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$root/target/static}
tag=${TAG:-dev}
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
context=$root/target/docker-context
all=(control-plane registrar heartbeat-gateway worker-agent musterctl)
if (($#)); then bins=("$@"); else bins=("${all[@]}"); fi

package() {
  case $1 in
    musterctl) echo musterctl ;;
    control-plane | registrar | heartbeat-gateway | worker-agent) echo "muster-$1" ;;
    *) echo "unknown binary: $1 (one of: ${all[*]})" >&2; exit 2 ;;
  esac
}

packages=()
for bin in "${bins[@]}"; do packages+=(-p "$(package "$bin")"); done

if [[ ${SKIP_CARGO:-0} != 1 ]]; then
  echo "==> cargo build (static glibc, $triple) -> $target_dir"
  # No debug info at all: the staged copies are stripped anyway, and it is most of the size.
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" CARGO_TARGET_DIR=$target_dir \
    CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --locked --target "$triple" --bins "${packages[@]}"
fi

echo "==> staging $context"
rm -rf "$context"
mkdir -p "$context/bin" "$context/rootfs/var/lib/muster" "$context/rootfs/etc/muster/tls" \
  "$context/rootfs/tokens" "$context/rootfs/tmp"
chmod 0755 "$context/rootfs/var/lib/muster" "$context/rootfs/etc/muster/tls" "$context/rootfs/tokens"
chmod 1777 "$context/rootfs/tmp"
printf 'muster:x:65532:65532:muster:/var/lib/muster:/sbin/nologin\n' > "$context/rootfs/etc/passwd"
printf 'muster:x:65532:\n' > "$context/rootfs/etc/group"
for bin in "${bins[@]}"; do
  exe=$target_dir/$triple/release/$bin
  [[ -x $exe ]] || { echo "missing $exe (run without SKIP_CARGO=1)" >&2; exit 1; }
  if [[ $(file "$exe") == *"dynamically linked"* ]]; then
    echo "$exe is dynamically linked; it would not run FROM scratch" >&2
    exit 1
  fi
  objcopy --strip-debug "$exe" "$context/bin/$bin"
done
du -sh "$context"

for bin in "${bins[@]}"; do
  echo "==> muster/$bin:$tag (muster/$bin:$version)"
  # --network none: the build never needs the network (and nothing can be pulled).
  docker build --quiet --network none -f deploy/docker/Dockerfile --target "$bin" \
    -t "muster/$bin:$tag" -t "muster/$bin:$version" "$context"
done
docker images --filter=reference='muster/*' --format 'table {{.Repository}}:{{.Tag}}\t{{.Size}}'
