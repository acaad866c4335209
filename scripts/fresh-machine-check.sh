#!/usr/bin/env bash
# Proves the README's first command on a fresh Debian 12 machine, not on this one: makes a minimal
# Debian 12 (bookworm) root with debootstrap holding python3 and the C compiler a Rust linker needs
# (gcc, libc6-dev) and nothing else (no g++, no cmake, no dcmtk, no cargo registry), mounts this
# machine's Rust toolchain into it read-only, clones the repository's HEAD into it, and runs the
# README's first command there with an empty environment, timing it.
#
#   sudo scripts/fresh-machine-check.sh            # the first command (the demo)
#   sudo scripts/fresh-machine-check.sh --tests    # the second command too (the whole suite)
#
# Environment: FRESH_ROOT (default /var/tmp/segnode-fresh-root; re-used if it holds a bookworm root,
# but the clone and the cargo home inside are always new), MIRROR (default: this machine's Debian
# mirror). Needs root (debootstrap, chroot, mounts). Run on demand, not in CI.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${FRESH_ROOT:-/var/tmp/segnode-fresh-root}
run_tests=0
[ "${1:-}" = --tests ] && run_tests=1

[ "$(id -u)" = 0 ] || { echo "fresh-machine-check: run as root (debootstrap, chroot, mounts)" >&2; exit 1; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
mirror=${MIRROR:-$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}

if [ ! -x "$root/usr/bin/python3" ]; then
  echo "== debootstrap bookworm into $root (python3, gcc, libc6-dev, ca-certificates) from $mirror"
  rm -rf "$root"
  debootstrap --variant=minbase --include=python3,python3-venv,gcc,libc6-dev,ca-certificates \
    bookworm "$root" "$mirror" >/dev/null
fi
# This machine reaches the registries through a CA of its own; apt inside the root uses its sources.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp -r /etc/apt/sources.list.d/. "$root/etc/apt/sources.list.d/" 2>/dev/null || true
rm -f "$root/etc/apt/sources.list.d/"*nodesource* "$root/etc/apt/sources.list.d/"*google* 2>/dev/null || true
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
  cp /usr/share/keyrings/debian-archive-keyring.gpg "$root/usr/share/keyrings/"

mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # bind SRC DST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mounts+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
bind "${RUSTUP_HOME:-$HOME/.rustup}" "$root/opt/rustup" ro
bind "${CARGO_HOME:-$HOME/.cargo}/bin" "$root/opt/cargo-bin" ro

echo "== what the fresh root has"
chroot "$root" bash -c 'for t in python3 gcc cc g++ c++ cmake storescu git; do
  printf "  %-8s %s\n" "$t" "$(command -v $t || echo "(none)")"; done; . /etc/os-release; echo "  $PRETTY_NAME"'

echo "== clone HEAD of $repo into the root"
rm -rf "$root/root/segnode" "$root/root/.cargo"
git clone -q --no-hardlinks "$repo" "$root/root/segnode"
cores=$(nproc)

in_root() {
  chroot "$root" env -i HOME=/root PATH=/root/.cargo/bin:/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo TERM=dumb \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    bash -c "cd /root/segnode && $1"
}

# The README's first command, exactly as a newcomer types it.
first=$(sed -n '/^## The two commands/,/^## /p' "$repo/README.md" | awk '/^```sh/ { getline; print; exit }')
echo "== the README's first command, on $cores cores: $first"
start=$(date +%s)
set +e
in_root "$first" 2>&1 | tee /tmp/segnode-fresh-first.log | grep --line-buffered -v '^ *Compiling ' | sed 's/^/  | /'
status=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - start))
bin="$root/root/segnode/target/release/segnode"
size=$([ -f "$bin" ] && du -m "$bin" | cut -f1 || echo "?")
echo "== first command: exit ${status}, ${elapsed} s (fresh clone -> demo result, ${cores} cores), release binary ${size} MB"
grep -q "Dice against the ground truth" /tmp/segnode-fresh-first.log ||
  { echo "fresh-machine-check: FAILED: no Dice line (log: /tmp/segnode-fresh-first.log)" >&2; exit 1; }

if [ "$run_tests" = 1 ]; then
  second=$(sed -n '/^## The two commands/,/^## /p' "$repo/README.md" | awk '/^```sh/ { n++; if (n == 2) { getline; print; exit } }')
  echo "== the README's second command: $second"
  start=$(date +%s)
  set +e
  in_root "CI=true $second" 2>&1 | tee /tmp/segnode-fresh-second.log | tail -n 40
  status=${PIPESTATUS[0]}
  set -e
  echo "== second command: exit ${status}, $(($(date +%s) - start)) s"
  [ "$status" = 0 ] || exit 1
fi
echo "fresh-machine-check: ok"
