#!/usr/bin/env bash
# Benchmark: `moor build` against Docker's classic builder (Debian's
# docker.io, `DOCKER_BUILDKIT=0`, dockerd started here with its own data
# root, exec root, pidfile and socket, no bridge, no iptables), in the same
# run, round by round, so both see the same load:
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
# images removed). Needs root, docker.io, and the real-image cache
# (`cargo test --test tests real::` fills it). Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cache=${MOOR_TEST_CACHE:-/var/cache/moor-tests}
base_tar=$(ls "$cache"/images/redis-*.tar 2>/dev/null | head -1)
[ -n "$base_tar" ] || { echo "no Debian base in $cache/images (run: cargo test --test tests real::)" >&2; exit 1; }

work=$(mktemp -d /tmp/moor-bench-build.XXXXXX)
dockerd_pid=""
docker=(/usr/bin/docker -H "unix://$work/docker.sock")
cleanup() {
  set +e
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null
  fi
  umount -R "$work/docker" 2>/dev/null
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

dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
  --pidfile "$work/docker.pid" --bridge=none --iptables=false --ip6tables=false \
  --storage-driver=overlay2 >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 300); do "${docker[@]}" info >/dev/null 2>&1 && break; sleep 0.2; done
"${docker[@]}" import "$base_tar" localhost/bench/debian:1 >/dev/null
dver=$("${docker[@]}" version -f '{{.Server.Version}}')

ms() { python3 -c 'import time; print(time.perf_counter_ns() // 1000000)'; }
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
timed() { local t0; t0=$(ms); "$@"; echo $(( $(ms) - t0 )); }

declare -a mc md mk dc dd dk
for r in $(seq 1 "$RUNS"); do
  echo "listen 6379" > "$ctx/conf/app.conf"
  moor_state; docker_reset
  mc+=("$(timed moor_build)"); dc+=("$(timed docker_build)")
  md+=("$(timed moor_build)"); dd+=("$(timed docker_build)")
  echo "listen $((6379 + r))" > "$ctx/conf/app.conf"
  mk+=("$(timed moor_build)"); dk+=("$(timed docker_build)")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() {
  local what=$1 m d
  m=$(median "${@:2:$RUNS}"); d=$(median "${@:$((RUNS + 2))}")
  python3 -c "import sys; m,d=int(sys.argv[1]),int(sys.argv[2]); print(f'| {sys.argv[3]} | {m} ms | {d} ms | {d/max(m,1):.1f}× |')" "$m" "$d" "$what"
}
echo "moor build vs Docker $dver classic builder (DOCKER_BUILDKIT=0), $RUNS rounds, $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| build of a 10-step, 2-stage Dockerfile over a Debian base, median | moor | Docker | Docker / moor |"
echo "| --- | ---: | ---: | ---: |"
row "cold (nothing cached)" "${mc[@]}" "${dc[@]}"
row "cached (nothing changed)" "${md[@]}" "${dd[@]}"
row "one file read by the last COPY changed" "${mk[@]}" "${dk[@]}"
echo
echo "All runs (ms): moor cold ${mc[*]}, cached ${md[*]}, one file ${mk[*]}; Docker cold ${dc[*]}, cached ${dd[*]}, one file ${dk[*]}"
