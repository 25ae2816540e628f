#!/usr/bin/env bash
# Benchmark: `moor build` against Docker's classic builder (Debian's
# docker.io, `DOCKER_BUILDKIT=0`, dockerd started here with its own data
# root, exec root, pidfile and socket, no bridge, no iptables) and against
# `buildah bud --layers` (Debian's buildah, its own root and run root,
# `--isolation chroot`), in the same run, round by round, so all see the
# same load:
#
# - cold: a 10-step, 2-stage Dockerfile over a Debian base (a root
#   filesystem made offline by mmdebstrap: the redis image of tests/real,
#   taken from MOOR_TEST_CACHE), nothing cached;
# - cached: the same build again, nothing changed;
# - one file: a file read only by the last COPY changed, then built.
#
#   sudo bench/build.sh [RUNS]      (default 3)
#
# Each tool's cache is emptied before a cold build (moor: a fresh state dir
# with the base imported; Docker: `docker builder prune -af` and the built
# images removed; buildah: the built image and its intermediate layers
# removed). Needs root, docker.io, and the real-image cache (`cargo test
# --test tests real::` fills it); buildah when installed. PEERS (default
# "docker buildah") chooses the peers. Each command is timed with bash's
# own clock (EPOCHREALTIME): no process is started around it. Prints
# Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
PEERS=${PEERS-docker buildah}
peer() { [[ " $PEERS " == *" $1 "* ]] && command -v "$1" >/dev/null; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cache=${MOOR_TEST_CACHE:-/var/cache/moor-tests}
base_tar=$(ls "$cache"/images/redis-*.tar 2>/dev/null | head -1)
[ -n "$base_tar" ] || { echo "no Debian base in $cache/images (run: cargo test --test tests real::)" >&2; exit 1; }

work=$(mktemp -d /tmp/moor-bench-build.XXXXXX)
dockerd_pid=""
docker=(/usr/bin/docker -H "unix://$work/docker.sock")
. bench/lib/docker.sh
cleanup() {
  set +e
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null
  fi
  umount -R "$work/docker" 2>/dev/null
  # buildah's overlay mounts, innermost first.
  awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

nice -n 5 cargo build -q --release -p moor
moor="$CARGO_TARGET_DIR/release/moor"

ctx="$work/ctx"
mkdir -p "$ctx/src" "$ctx/conf"
for i in $(seq 1 200); do head -c 2000 /dev/urandom | base64 > "$ctx/src/f$i.txt"; done
echo "listen 6379" > "$ctx/conf/app.conf"
cat > "$ctx/Dockerfile" <<'EOF'
FROM localhost/bench/debian:1 AS build
WORKDIR /src
COPY src/ /src/
RUN cat /src/*.txt | sha256sum > /checksum
RUN mkdir -p /out && cp /checksum /out/ && ls /src | wc -l > /out/count
FROM localhost/bench/debian:1
ENV APP_HOME=/app
WORKDIR /app
COPY --from=build /out/ /app/
RUN useradd -r app && chown -R app /app
USER app
COPY conf/app.conf /app/app.conf
EOF

dver=- bver=-
if peer docker; then
  dockerd_start "unix://$work/docker.sock"
  "${docker[@]}" import "$base_tar" localhost/bench/debian:1 >/dev/null
  dver=$("${docker[@]}" version -f '{{.Server.Version}}')
fi
buildah=(buildah --root "$work/buildah" --runroot "$work/buildah-run" --storage-driver overlay)
if peer buildah; then
  c=$("${buildah[@]}" from scratch)
  "${buildah[@]}" add "$c" "$base_tar" / >/dev/null
  "${buildah[@]}" commit -q "$c" localhost/bench/debian:1 >/dev/null
  "${buildah[@]}" rm "$c" >/dev/null
  bver=$(buildah --version | awk '{print $3}')
fi
moor_state() {
  rm -rf "$work/moor"
  "$moor" --state-dir "$work/moor" image import "$base_tar" --tag localhost/bench/debian:1 >/dev/null
}
moor_build() { "$moor" --state-dir "$work/moor" build -q -t localhost/bench/app:1 "$ctx" >/dev/null; }
docker_reset() {
  "${docker[@]}" rmi -f localhost/bench/app:1 >/dev/null 2>&1 || true
  "${docker[@]}" builder prune -af >/dev/null 2>&1 || true
  "${docker[@]}" image prune -f >/dev/null 2>&1 || true
}
docker_build() { DOCKER_BUILDKIT=0 "${docker[@]}" build -q -t localhost/bench/app:1 "$ctx" >/dev/null; }
buildah_reset() {
  "${buildah[@]}" rmi -f localhost/bench/app:1 >/dev/null 2>&1 || true
  "${buildah[@]}" rmi --prune >/dev/null 2>&1 || true
}
buildah_build() {
  "${buildah[@]}" bud --isolation chroot --layers -q -t localhost/bench/app:1 "$ctx" >/dev/null 2>&1
}
# Milliseconds, from bash's own clock.
timed() {
  local t0 t1
  t0=${EPOCHREALTIME/./}
  "$@"
  t1=${EPOCHREALTIME/./}
  echo $(((t1 - t0) / 1000))
}

declare -a mc md mk dc dd dk bc bd bk
for r in $(seq 1 "$RUNS"); do
  echo "listen 6379" > "$ctx/conf/app.conf"
  moor_state
  if peer docker; then docker_reset; fi
  if peer buildah; then buildah_reset; fi
  mc+=("$(timed moor_build)")
  if peer docker; then dc+=("$(timed docker_build)"); fi
  if peer buildah; then bc+=("$(timed buildah_build)"); fi
  md+=("$(timed moor_build)")
  if peer docker; then dd+=("$(timed docker_build)"); fi
  if peer buildah; then bd+=("$(timed buildah_build)"); fi
  echo "listen $((6379 + r))" > "$ctx/conf/app.conf"
  mk+=("$(timed moor_build)")
  if peer docker; then dk+=("$(timed docker_build)"); fi
  if peer buildah; then bk+=("$(timed buildah_build)"); fi
done

median() {
  [ $# -gt 0 ] || { echo -; return; }
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
ratio() { [ "$2" = - ] && echo - || python3 -c "import sys; print(f'{int(sys.argv[2])/max(int(sys.argv[1]),1):.1f}×')" "$1" "$2"; }
unit() { [ "$1" = - ] && echo - || echo "$1 ms"; }
row() { # what, moor runs name, docker runs name, buildah runs name
  local -n m_=$2 d_=$3 b_=$4
  local m d b
  m=$(median "${m_[@]}"); d=$(median "${d_[@]}"); b=$(median "${b_[@]}")
  echo "| $1 | $(unit "$m") | $(unit "$d") | $(ratio "$m" "$d") | $(unit "$b") | $(ratio "$m" "$b") |"
}
echo "moor build vs Docker $dver classic builder (DOCKER_BUILDKIT=0) and buildah $bver (bud --layers), $RUNS rounds, $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| build of a 10-step, 2-stage Dockerfile over a Debian base, median | moor | Docker | Docker / moor | buildah | buildah / moor |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
row "cold (nothing cached)" mc dc bc
row "cached (nothing changed)" md dd bd
row "one file read by the last COPY changed" mk dk bk
echo
echo "All runs (ms): moor cold ${mc[*]}, cached ${md[*]}, one file ${mk[*]}; Docker cold ${dc[*]:-}, cached ${dd[*]:-}, one file ${dk[*]:-}; buildah cold ${bc[*]:-}, cached ${bd[*]:-}, one file ${bk[*]:-}"
