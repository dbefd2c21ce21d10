#!/usr/bin/env bash
# Installs what blockwise's build and tests need on a fresh Debian machine:
# the real NBD clients (qemu-utils, libnbd-bin, nbdkit) and the Go modules.
# The test command also installs versitygw (scripts/versitygw.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for tool in qemu-img:qemu-utils qemu-nbd:qemu-utils nbdcopy:libnbd-bin nbdinfo:libnbd-bin nbdkit:nbdkit; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
go mod download
