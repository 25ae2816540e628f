#!/usr/bin/env bash
# Benchmark: create + start + wait for the exit of `/bin/true` in a cached
# busybox image with no network, moor against `runc run` of an equivalent
# bundle, against `docker run --rm --network none` (Debian's docker.io,
# dockerd started here with its own data root, exec root, pidfile and
# socket, no bridge, no iptables) and against `podman run --rm --network
# none` (Debian's Podman with its own roots: bench/lib/podman.sh), all in the
# same run, interleaved round by round so that every tool sees the same load;
# then the memory of a shim supervising an idle container (Docker's
# containerd-shim-runc-v2 and Podman's conmon beside moor's).
#
#   sudo bench/container.sh [RUNS]      (default 30)
#   sudo SHIM_ONLY=1 bench/container.sh  (only moor's shims' memory and the
#                                        binaries' ELF types: no timing, no
#                                        Docker, no Podman)
#
# What each row times (wall clock, per run):
# - moor engine: `Engine::create` + `Engine::start` + `Engine::wait_exit`,
#   in-process (runtime/examples/container_run.rs): record, overlay mount,
#   bundle, shim spawned (`moor-shim`, built beside `moor`), container created and started by the executor, and
#   the shim's exit record — written after the container's cgroups, runtime
#   state and mount are released. With the built-in executor (youki's
#   libcontainer inside the shim) and with `runc create` + `runc start`.
#   Removing the container afterwards (its directory) is timed apart.
# - moor CLI: `moor dev run` + `moor dev wait` + `moor dev rm`, three
#   processes (what a user of the hidden dev commands pays).
# - runc run: `runc run` of a bundle whose config.json is the one moor wrote
#   for the same container (same namespaces: pid, mount, uts, ipc, net; same
#   mounts, capabilities, masked paths, rlimits; a cgroup under the same
#   parent) over a plain copy of the same root filesystem; runc creates,
#   starts, waits and deletes. Again over the same overlay moor uses (the
#   busybox tree as the lower layer, a fresh upper dir per run): mount +
#   `runc run` + unmount, timed together.
# - docker run: `docker run --rm --network none IMAGE /bin/true` with
#   Debian's client (/usr/bin/docker), image imported from the same tar.
# - podman run: `podman run --rm --network none IMAGE /bin/true`, image
#   imported from the same tar.
#
# Needs root, docker.io, podman, netavark, aardvark-dns, catatonit, runc,
# busybox-static, python3.
# Prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-30}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
parent=moor-bench-ctr-$$
export MOOR_CGROUP_PARENT=$parent

work=$(mktemp -d /tmp/moor-bench-ctr.XXXXXX)
state=$work/moor-state
dockerd_pid=""
docker=(/usr/bin/docker -H "unix://$work/docker.sock")
. bench/lib/podman.sh
. bench/lib/docker.sh
cleanup() {
  set +e
  podman_cleanup
  if [ -x "${moor:-}" ]; then
    for s in "$state" "$state-builtin" "$state-runc"; do
      for c in "$s"/containers/*/; do
        [ -d "$c" ] && "$moor" --state-dir "$s" dev rm --force "$(basename "$c")" >/dev/null 2>&1
      done
    done
  fi
  if [ -d "$work/runc-root" ]; then
    for id in $(runc --root "$work/runc-root" list -q 2>/dev/null); do
      runc --root "$work/runc-root" delete --force "$id" >/dev/null 2>&1
    done
  fi
  if [ -n "$dockerd_pid" ]; then
    ids=$("${docker[@]}" ps -aq 2>/dev/null)
    [ -n "$ids" ] && "${docker[@]}" rm -f $ids >/dev/null 2>&1
    kill "$dockerd_pid" 2>/dev/null && wait "$dockerd_pid" 2>/dev/null
  fi
  for d in /sys/fs/cgroup/"$parent" /sys/fs/cgroup/*/"$parent"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nice -n 5 cargo build -q --release -p moor
nice -n 5 cargo build -q --release -p moor-runtime --example container_run
moor="$CARGO_TARGET_DIR/release/moor"
moor_shim="$CARGO_TARGET_DIR/release/moor-shim"
run_bin="$CARGO_TARGET_DIR/release/examples/container_run"

# The same busybox root for everyone (as examples/busybox-image.sh makes it).
busybox=$(command -v busybox)
root=$work/root
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
tar -C "$root" -cf "$work/busybox.tar" .

printf '[containers.tmpl]\nimage = "moor.invalid/bench/busybox"\ncommand = ["/bin/true"]\nnetwork_mode = "none"\n' >"$work/tmpl.toml"
sed 's/tmpl/idle/; s|\["/bin/true"\]|["sleep", "1000000"]|' "$work/tmpl.toml" >"$work/idle.toml"

# Shim memory: one idle container (`sleep`) per executor; the shim's RSS
# (VmRSS) and proportional share (Pss, smaps_rollup). The shim must be the
# `moor-shim` binary built beside `moor`.
shim_mem() {
  local pid=$1
  echo "$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")"
}
declare -A shim
moor_shims() {
  local ex spid
  for ex in builtin runc; do
    "$moor" --state-dir "$state" dev run --name "idle-$ex" --executor "$ex" --rootfs "$root" \
      --cgroup-parent "$parent" -- sleep 1000000 >/dev/null
    sleep 1
    spid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["shim_pid"])' "$state/containers/idle-$ex/state.json")
    [ "$(readlink "/proc/$spid/exe")" = "$(readlink -f "$moor_shim")" ] ||
      { echo "the shim of idle-$ex is $(readlink "/proc/$spid/exe"), not $moor_shim" >&2; exit 1; }
    shim[$ex]=$(shim_mem "$spid")
    "$moor" --state-dir "$state" dev rm --force "idle-$ex" >/dev/null
  done
}
# The ELF type of each binary (`readelf -h`): DYN is position-independent.
elf_types() {
  echo "Binaries (\`readelf -h\` Type): \`moor\` $(readelf -h "$moor" | awk '/Type:/ {print $2}'), \`moor-shim\` $(readelf -h "$moor_shim" | awk '/Type:/ {print $2}'); sizes $(du -h "$moor" | cut -f1), $(du -h "$moor_shim" | cut -f1)."
}
if [ "${SHIM_ONLY:-0}" = 1 ]; then
  moor_shims
  echo "| shim of an idle container | VmRSS | Pss |"
  echo "| --- | ---: | ---: |"
  for ex in builtin runc; do
    read -r rss pss <<<"${shim[$ex]}"
    python3 -c 'import sys; ex, r, p = sys.argv[1:]; print(f"| moor-shim, {ex} executor | {int(r) / 1024:.2f} MiB | {int(p) / 1024:.2f} MiB |")' "$ex" "$rss" "$pss"
  done
  echo
  elf_types
  exit 0
fi

# runc's bundle: the config.json moor writes for this container.
"$moor" --state-dir "$state" dev run --name tmpl --rootfs "$root" --manifest "$work/tmpl.toml" >/dev/null
"$moor" --state-dir "$state" dev wait tmpl >/dev/null
bundle=$work/runc-bundle
mkdir -p "$bundle" "$bundle-ov/rootfs"
cp -a "$root" "$bundle/rootfs"
cp "$state/containers/tmpl/hostname" "$state/containers/tmpl/hosts" "$bundle/"
python3 - "$state/containers/tmpl/config.json" "$bundle" "$parent" <<'EOF'
import json, sys
src, bundle, parent = sys.argv[1:]
c = json.load(open(src))
c["root"] = {"path": "rootfs", "readonly": False}
for m in c["mounts"]:
    if m["destination"] in ("/etc/hostname", "/etc/hosts"):
        m["source"] = f"{bundle}/{m['destination'].rsplit('/', 1)[1]}"
c["linux"]["cgroupsPath"] = f"/{parent}/runc-bench"
json.dump(c, open(f"{bundle}/config.json", "w"), indent=1)
c["root"]["path"] = f"{bundle}-ov/rootfs"
json.dump(c, open(f"{bundle}-ov/config.json", "w"), indent=1)
EOF
"$moor" --state-dir "$state" dev rm tmpl

dockerd_start "unix://$work/docker.sock"
"${docker[@]}" import "$work/busybox.tar" localhost/bench/busybox:1 >/dev/null
dver=$("${docker[@]}" version -f '{{.Server.Version}}')
rver=$(runc --version | head -1)
podman_setup
"$podman" import "$work/busybox.tar" localhost/bench/busybox:1 >/dev/null

# One warm-up run of each, then RUNS rounds, every tool once per round.
python3 - "$RUNS" "$work" "$state" "$root" "$moor" "$moor_shim" "$run_bin" "$bundle" "$parent" "${docker[*]}" "$podman" >"$work/times.txt" <<'EOF'
import subprocess, sys, time
runs, work, state, root, moor, moor_shim, run_bin, bundle, parent, docker, podman = sys.argv[1:]
docker = docker.split()

def timed(argv):
    t0 = time.perf_counter_ns()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter_ns() - t0) // 1000

def engine(executor, i):
    out = subprocess.run([run_bin, f"{state}-{executor}", root, "1", moor_shim, executor, parent],
                         check=True, capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]

def cli(i):
    name = f"cli{i}"
    t0 = time.perf_counter_ns()
    subprocess.run([moor, "--state-dir", state, "dev", "run", "--name", name, "--rootfs", root,
                    "--cgroup-parent", parent, "--", "/bin/true"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([moor, "--state-dir", state, "dev", "wait", name], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([moor, "--state-dir", state, "dev", "rm", name], check=True)
    return (time.perf_counter_ns() - t0) // 1000

def runc(i):
    return timed(["runc", "--root", f"{work}/runc-root", "run", "--bundle", bundle, f"bench{i}"])

import ctypes, os, shutil
libc = ctypes.CDLL(None, use_errno=True)
def runc_overlay(i):
    ov = f"{work}/ov{i}"
    os.makedirs(f"{ov}/upper"); os.makedirs(f"{ov}/work")
    target = f"{bundle}-ov/rootfs"
    opts = f"lowerdir={root},upperdir={ov}/upper,workdir={ov}/work"
    t0 = time.perf_counter_ns()
    if libc.mount(b"overlay", target.encode(), b"overlay", 0, opts.encode()) != 0:
        raise OSError(ctypes.get_errno(), "mount overlay")
    try:
        subprocess.run(["runc", "--root", f"{work}/runc-root", "run", "--bundle", f"{bundle}-ov",
                        f"benchov{i}"], check=True, stdout=subprocess.DEVNULL)
    finally:
        if libc.umount2(target.encode(), 0) != 0:
            raise OSError(ctypes.get_errno(), "umount overlay")
    t = (time.perf_counter_ns() - t0) // 1000
    shutil.rmtree(ov)
    return t

def dock(i):
    return timed(docker + ["run", "--rm", "--network", "none", "localhost/bench/busybox:1", "/bin/true"])

def pod(i):
    return timed([podman, "run", "--rm", "--network", "none", "localhost/bench/busybox:1", "/bin/true"])

for i in range(int(runs) + 1):
    b = engine("builtin", i)
    r = engine("runc", i)
    # total, remove per executor, the others, then create, start, wait per executor
    row = [b[0], b[4], r[0], r[4], cli(i), runc(i), runc_overlay(i), dock(i), pod(i)] + b[1:4] + r[1:4]
    if i > 0:
        print(*row, flush=True)
EOF

# Shim memory: Docker's containerd-shim-runc-v2 and Podman's conmon for the
# same idle container (moor's shims: moor_shims above).
moor_shims
cid=$("${docker[@]}" run -d --network none localhost/bench/busybox:1 sleep 1000000)
sleep 1
dpid=$(pgrep -f "containerd-shim-runc-v2 .*-id $cid" | head -1)
dshim=$(shim_mem "$dpid")
"${docker[@]}" rm -f "$cid" >/dev/null
pcid=$("$podman" run -d --network none localhost/bench/busybox:1 sleep 1000000)
sleep 1
ppid=$(pgrep -f "conmon .*-c $pcid" | head -1)
pshim=$(shim_mem "$ppid")
"$podman" rm -f -t 0 "$pcid" >/dev/null

python3 - "$work/times.txt" "$RUNS" "$dver" "$rver" "${shim[builtin]}" "${shim[runc]}" "$dshim" "$pver" "$pshim" <<'EOF'
import sys
path, runs, dver, rver, sb, sr, sd, pver, sp = sys.argv[1:]
cols = list(zip(*[list(map(int, l.split())) for l in open(path)]))
phases = cols[9:]
cols = cols[:9]
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
names = ["moor engine, built-in executor (create + start + wait)",
         "moor engine, built-in executor: remove afterwards",
         "moor engine, runc executor (create + start + wait)",
         "moor engine, runc executor: remove afterwards",
         "moor CLI: `moor dev run` + `dev wait` + `dev rm`",
         f"`runc run` of the same bundle ({rver}), plain directory",
         "the same over moor's overlay: mount + `runc run` + unmount",
         f"`docker run --rm --network none` (Docker Engine {dver})",
         f"`podman run --rm --network none` (Podman {pver})"]
med = [q(c, 0.5) for c in cols]
runc_med, docker_med = med[5], med[7]
podman_med = med[8]
print(f"| /bin/true in busybox, network none ({runs} runs each, interleaved) | median | p90 | ÷ `runc run` | `docker run` ÷ | `podman run` ÷ |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for i, (n, c) in enumerate(zip(names, cols)):
    ratio = " | | " if "remove" in n else f"{med[i] / runc_med:.2f} | {docker_med / med[i]:.1f}× | {podman_med / med[i]:.1f}×"
    print(f"| {n} | {med[i] / 1000:.1f} ms | {q(c, 0.9) / 1000:.1f} ms | {ratio} |")
print()
print("Medians of the moor engine's phases (create / start / wait):",
      "built-in {:.1f} / {:.1f} / {:.1f} ms, runc {:.1f} / {:.1f} / {:.1f} ms.".format(
          *[q(c, 0.5) / 1000 for c in phases]))
print()
print("| shim of an idle container | VmRSS | Pss |")
print("| --- | ---: | ---: |")
for n, s in [("moor-shim, built-in executor", sb), ("moor-shim, runc executor", sr),
             (f"Docker's containerd-shim-runc-v2 ({dver})", sd),
             (f"Podman's conmon ({pver})", sp)]:
    rss, pss = map(int, s.split())
    print(f"| {n} | {rss / 1024:.2f} MiB | {pss / 1024:.2f} MiB |")
EOF
echo
elf_types
