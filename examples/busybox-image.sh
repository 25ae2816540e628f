#!/usr/bin/env bash
# Makes the example stack's image offline, from Debian's busybox-static:
# a root filesystem with /bin/busybox and a link per applet, imported as
# localhost/moor-example/busybox:1 (as `docker import` would).
#
#   examples/busybox-image.sh [MOOR_BINARY]
set -euo pipefail
moor=${1:-moor}
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q static || busybox=/bin/busybox
[ -x "$busybox" ] || { echo "busybox-static is not installed (apt-get install busybox-static)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root" "$root.tar"' EXIT
mkdir -p "$root"/{bin,etc,tmp,www,root,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nwww-data:x:33:33:www-data:/www:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\n' > "$root/etc/group"
tar -C "$root" -cf "$root.tar" .
"$moor" image import "$root.tar" --tag localhost/moor-example/busybox:1
