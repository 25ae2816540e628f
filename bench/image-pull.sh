#!/usr/bin/env bash
# Benchmark: pull + unpack of a >= 100 MB image of 6
# layers from a loopback registry (Debian's docker-registry), moor against
# Docker Engine (dockerd from docker.io, started here with its own data
# root), in the same run. Also sha256 throughput of moor's hashing crate
# (sha2) against sha256sum.
#
# Usage: bench/image-pull.sh [RUNS]   (root; needs docker-registry, skopeo,
# docker.io, python3). Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

work=$(mktemp -d /tmp/moor-bench-image.XXXXXX)
registry_pid="" dockerd_pid=""
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
  [ -n "$dockerd_pid" ] && kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null || true
  umount -R "$work/docker" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --release -p moor
moor="$CARGO_TARGET_DIR/release/moor"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YAML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
until curl -fs "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.1; done

# An OCI layout: 6 gzip layers of 18 MiB each (random file contents, so
# compression cannot shrink the transfer), pushed with skopeo.
python3 - "$work/oci" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256")
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return f"sha256:{d}", len(data)
layers, diff_ids = [], []
for i in range(6):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for j in range(18):
            data = os.urandom(1 << 20)
            info = tarfile.TarInfo(f"layer{i}/file{j}.bin"); info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    d, n = put(gzip.compress(raw, 1))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": n})
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
cd, cn = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
                       "layers": layers}).encode()
md, mn = put(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "1"}}]},
          open(f"{out}/index.json", "w"))
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
ref="127.0.0.1:$port/bench/big:1"
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:1" "docker://$ref"
size_mb=$(du -sm "$work/oci/blobs" | cut -f1)

dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
  --pidfile "$work/docker.pid" --bridge=none --iptables=false --ip6tables=false \
  --storage-driver=overlay2 >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
docker=(docker -H "unix://$work/docker.sock")
until "${docker[@]}" info >/dev/null 2>&1; do sleep 0.2; done

now() { date +%s.%N; }
moor_times=() docker_times=()
for i in $(seq "$RUNS"); do
  rm -rf "$work/moor-state"; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); "$moor" --state-dir "$work/moor-state" image pull "$ref" >/dev/null 2>&1; t1=$(now)
  moor_times+=("$(echo "$t1 - $t0" | bc)")
  "${docker[@]}" rmi -f "$ref" >/dev/null 2>&1 || true
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); "${docker[@]}" pull -q "$ref" >/dev/null; t1=$(now)
  docker_times+=("$(echo "$t1 - $t0" | bc)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m=$(median "${moor_times[@]}") d=$(median "${docker_times[@]}")

# sha256 throughput over 1 GiB: sha256sum, and
# moor's sha2 (criterion, store/benches/digest.rs).
head -c $((1 << 30)) /dev/zero > "$work/zeros.bin"
t0=$(now); sha256sum "$work/zeros.bin" >/dev/null; t1=$(now)
sum_rate=$(echo "1024 / ($t1 - $t0)" | bc)

echo
echo "| what | moor | Docker Engine $("${docker[@]}" version -f '{{.Server.Version}}') | ratio (Docker / moor) |"
echo "| --- | --- | --- | --- |"
printf '| pull + unpack, %s MB in 6 gzip layers, median of %s | %.2f s | %.2f s | %.2f× |\n' \
  "$size_mb" "$RUNS" "$m" "$d" "$(echo "$d / $m" | bc -l)"
echo
echo "moor runs: ${moor_times[*]}"
echo "docker runs: ${docker_times[*]}"
echo "sha256sum throughput: ${sum_rate} MiB/s"
cargo bench -q -p moor-store --bench digest 2>/dev/null | grep -E "thrpt" | sed 's/^/moor sha2 /'
