#!/usr/bin/env bash
# The whole test suite: unit, integration and end-to-end tests against real processes, and
# the compose suite against the containers of compose.yaml.
#
# The end-to-end tests spawn the compiled binaries, so they are built first; the compose
# suite runs the images, so deploy/scripts/build-images.sh builds them (static release
# binaries, FROM scratch). Compose projects the suite leaves behind (a test killed before it
# could clean up) are removed on exit, however the run ends.
set -euo pipefail
cd "$(dirname "$0")/.."

remove_test_stacks() {
  command -v docker >/dev/null || return 0
  local format='{{.ID}} {{.Label "com.docker.compose.project"}}' pick='$2 ~ /^mustere2e/ { print $1 }'
  docker ps -a --format "$format" | awk "$pick" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network ls --format "$format" | awk "$pick" | xargs -r docker network rm >/dev/null 2>&1 || true
  docker volume ls --format '{{.Name}} {{.Label "com.docker.compose.project"}}' | awk "$pick" |
    xargs -r docker volume rm -f >/dev/null 2>&1 || true
}
trap remove_test_stacks EXIT

cargo build --workspace --bins
deploy/scripts/build-images.sh
# PRUNE_IMAGE_BUILD=1 (what .ci/run sets): the images hold their binaries, so the static release
# build and the staging dir are dropped before the test binaries are compiled, on a small disk.
# (Not when CARGO_TARGET_DIR is set: the static build then shares that dir with everything else.)
if [[ ${PRUNE_IMAGE_BUILD:-0} == 1 && -z ${CARGO_TARGET_DIR:-} ]]; then
  rm -rf target/static target/docker-context
fi
cargo nextest run --workspace --no-fail-fast "$@"
