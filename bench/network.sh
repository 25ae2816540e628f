#!/usr/bin/env bash
# Benchmark (issue 5, Performance): network attach latency per container, and
# the time to bring up 100 containers on one network, moor against Docker
# Engine (dockerd from Debian's docker.io, started here with its own data
# root, exec root and socket) in the same run, both from the same busybox
# root filesystem (examples/busybox-image.sh for moor, `docker import` of an
# identical tar for Docker).
#
#   sudo bench/network.sh [N_ATTACH] [N_UP]     (defaults 30 and 100)
#
# Attach: moor's `Networks::attach` (lease, veth pair, move into the
# namespace + rename, address, route, MTU, DNS record) timed in-process
# (runtime/examples/net_attach.rs) into namespaces made beforehand; Docker's
# `POST /networks/NET/connect` of a running container (the same work plus its
# API round trip), timed with curl on its unix socket. The release/disconnect
# is timed too.
# Bring-up: `moor apply` of a manifest of N_UP busybox containers on one
# network (the reconciler runs 8 at once; stop grace 0 s, as `docker rm -f` kills) against N_UP `docker run -d
# --network NET` through `xargs -P 8`; both finish when every container runs.
# Needs root, docker.io, busybox-static, curl, nft, bc. Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
N_ATTACH=${1:-30}
N_UP=${2:-100}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export MOOR_NFT_TABLE=moor_bench_net MOOR_NET_POOL=10.85.0.0/16 MOOR_CGROUP_PARENT=moor-bench-net-$$

work=$(mktemp -d /tmp/moor-bench-net.XXXXXX)
state=$work/moor-state
dockerd_pid=""
docker=(docker -H "unix://$work/docker.sock")
cleanup() {
  set +e
  if [ -x "${moor:-}" ]; then
    "$moor" --state-dir "$state" down -p bench --volumes >/dev/null 2>&1
  fi
  if [ -n "$dockerd_pid" ]; then
    ids=$("${docker[@]}" ps -aq 2>/dev/null)
    [ -n "$ids" ] && "${docker[@]}" rm -f $ids >/dev/null 2>&1
    for n in nmbd-a nmbd-b nmbd-up; do "${docker[@]}" network rm "$n" >/dev/null 2>&1; done
    kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null
  fi
  nft delete table ip "$MOOR_NFT_TABLE" 2>/dev/null
  for d in /sys/fs/cgroup/"$MOOR_CGROUP_PARENT" /sys/fs/cgroup/*/"$MOOR_CGROUP_PARENT"; do rmdir "$d" 2>/dev/null; done
  umount -R "$work/docker" "$work/docker-exec" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --release -p moor
cargo build -q --release -p moor-runtime --example net_attach
moor="$CARGO_TARGET_DIR/release/moor"
attach_bin="$CARGO_TARGET_DIR/release/examples/net_attach"

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms() { echo "scale=2; $1 / 1000" | bc; }

# The same busybox root for both.
MOOR_STATE_DIR=$state bash examples/busybox-image.sh "$moor" >/dev/null
busybox=$(command -v busybox)
root=$work/root
mkdir -p "$root"/{bin,etc,tmp,www,root,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
tar -C "$root" -cf "$work/busybox.tar" .

dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
  --pidfile "$work/docker.pid" --bridge=none --iptables=false --ip6tables=false \
  --storage-driver=overlay2 >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
until "${docker[@]}" info >/dev/null 2>&1; do sleep 0.2; done
"${docker[@]}" import "$work/busybox.tar" localhost/bench/busybox:1 >/dev/null
dver=$("${docker[@]}" version -f '{{.Server.Version}}')
api=$("${docker[@]}" version -f '{{.Server.APIVersion}}')

# --- attach latency -------------------------------------------------------
"$attach_bin" "$work/attach-state" "$N_ATTACH" >"$work/moor-attach.txt"
m_att=$(awk '{print $1}' "$work/moor-attach.txt" | median)
m_rel=$(awk '{print $2}' "$work/moor-attach.txt" | median)

"${docker[@]}" network create -d bridge --subnet 10.85.200.0/24 -o com.docker.network.bridge.name=nmbd-a nmbd-a >/dev/null
"${docker[@]}" network create -d bridge --subnet 10.85.201.0/24 -o com.docker.network.bridge.name=nmbd-b nmbd-b >/dev/null
for i in $(seq "$N_ATTACH"); do
  "${docker[@]}" run -d --network nmbd-a --name "a$i" localhost/bench/busybox:1 sleep 3600 >/dev/null
done
curl_api() { curl -sf --unix-socket "$work/docker.sock" -X POST -H 'Content-Type: application/json' -d "$2" "http://localhost/v$api/networks/$1" >/dev/null; }
for i in $(seq "$N_ATTACH"); do
  t0=$(now); curl_api nmbd-b/connect "{\"Container\":\"a$i\",\"EndpointConfig\":{\"Aliases\":[\"alias\"]}}"; t1=$(now)
  curl_api nmbd-b/disconnect "{\"Container\":\"a$i\"}"; t2=$(now)
  echo "$(((t1 - t0) / 1000)) $(((t2 - t1) / 1000))"
done >"$work/docker-attach.txt"
d_att=$(awk '{print $1}' "$work/docker-attach.txt" | median)
d_rel=$(awk '{print $2}' "$work/docker-attach.txt" | median)
# What curl + the API cost by themselves (GET /_ping).
ping_us=$(for _ in $(seq 20); do
  t0=$(now); curl -sf --unix-socket "$work/docker.sock" "http://localhost/v$api/_ping" >/dev/null; t1=$(now)
  echo $(((t1 - t0) / 1000))
done | median)
"${docker[@]}" rm -f $("${docker[@]}" ps -aq) >/dev/null

# --- 100 containers on one network -------------------------------------
manifests=$work/manifests
mkdir -p "$manifests"
{
  printf '[images.busybox]\nref = "localhost/moor-example/busybox:1"\npull = "never"\n\n'
  printf '[networks.nmbup]\nsubnet = "10.85.1.0/24"\n\n'
  for i in $(seq "$N_UP"); do
    printf '[containers.u%03d]\nimage = "busybox"\nnetworks = ["nmbup"]\ncommand = ["sleep", "3600"]\nstop_grace_period = "0s"\n\n' "$i"
  done
} >"$manifests/stack.toml"
t0=$(now)
"$moor" --state-dir "$state" apply -p bench "$manifests" >"$work/apply.log" 2>&1
t1=$(now)
m_up=$(((t1 - t0) / 1000))
m_running=$("$moor" --state-dir "$state" ps --json | grep -o '"state": *"running"' | wc -l)
t0=$(now)
"$moor" --state-dir "$state" down -p bench >/dev/null 2>&1
t1=$(now)
m_down=$(((t1 - t0) / 1000))

"${docker[@]}" network create -d bridge --subnet 10.85.2.0/24 -o com.docker.network.bridge.name=nmbd-up nmbd-up >/dev/null
t0=$(now)
seq -f 'u%03g' "$N_UP" | xargs -P 8 -I{} "${docker[@]}" run -d --network nmbd-up --name {} localhost/bench/busybox:1 sleep 3600 >/dev/null
t1=$(now)
d_up=$(((t1 - t0) / 1000))
d_running=$("${docker[@]}" ps -q | wc -l)
t0=$(now)
"${docker[@]}" ps -q | xargs -P 8 -n 13 "${docker[@]}" rm -f >/dev/null
t1=$(now)
d_down=$(((t1 - t0) / 1000))

echo
echo "| what | moor | Docker Engine $dver | ratio (Docker / moor) |"
echo "| --- | ---: | ---: | ---: |"
printf '| attach to a network (veth, address, route, DNS record), median of %s | %s ms | %s ms | %.1f× |\n' \
  "$N_ATTACH" "$(ms "$m_att")" "$(ms "$d_att")" "$(echo "$d_att / $m_att" | bc -l)"
printf '| detach + release, median of %s | %s ms | %s ms | %.1f× |\n' \
  "$N_ATTACH" "$(ms "$m_rel")" "$(ms "$d_rel")" "$(echo "$d_rel / $m_rel" | bc -l)"
printf '| bring up %s containers on one network (%s / %s running) | %s s | %s s | %.2f× |\n' \
  "$N_UP" "$m_running" "$d_running" "$(echo "scale=2; $m_up / 1000000" | bc)" \
  "$(echo "scale=2; $d_up / 1000000" | bc)" "$(echo "$d_up / $m_up" | bc -l)"
printf '| remove them (`moor down` / `docker rm -f`, 8 at once) | %s s | %s s | %.2f× |\n' \
  "$(echo "scale=2; $m_down / 1000000" | bc)" "$(echo "scale=2; $d_down / 1000000" | bc)" \
  "$(echo "$d_down / $m_down" | bc -l)"
echo
echo "Docker's attach includes its API round trip: curl GET /_ping alone takes $(ms "$ping_us") ms."
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
