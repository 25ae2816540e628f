#!/usr/bin/env bash
# Brings up examples/manifests for real on this machine, offline:
#   1. installs what the build and the example need from Debian if it is
#      missing (pkg-config and libseccomp-dev to build moor;
#      busybox-static for the image, nftables for the published port, tini
#      for `init = true`);
#   2. builds moor (and moor-shim, the per-container supervisor it starts);
#   3. makes the example's image from busybox-static (no registry needed);
#   4. runs the agent in the foreground on examples/manifests.
# Then: curl http://127.0.0.1:8080/ ; moor ps ; moor logs fetcher.
# Ctrl-C stops the agent (containers keep running); `moor down examples/manifests`
# removes the stack. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "run as root (moor creates namespaces, bridges and cgroups)" >&2; exit 1; fi
missing=()
command -v busybox >/dev/null || [ -x /bin/busybox ] || missing+=(busybox-static)
command -v nft >/dev/null || missing+=(nftables)
command -v tini-static >/dev/null || missing+=(tini)   # the init of containers with init = true
for pkg in pkg-config libseccomp-dev; do  # to build moor (seccomp)
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
cargo build --release -q -p moor   # both binaries: moor, and moor-shim beside it
moor="${CARGO_TARGET_DIR:-target}/release/moor"
if ! "$moor" images | grep -q '^localhost/moor-example/busybox:1 '; then
  bash examples/busybox-image.sh "$moor"
fi
exec "$moor" agent --source examples/manifests
