#!/bin/sh
# Runs inside the Debian bookworm root filesystem that scripts/build-images makes with
# `debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates`, to make it
# behave like the official python:3.11-slim-bookworm image for images/Dockerfile.*:
#   - `python` and `pip` on PATH (/usr/local/bin, first on the image's PATH);
#   - pip installs as root, into /usr/local/lib/python3.11/dist-packages, without
#     --break-system-packages: Debian's EXTERNALLY-MANAGED marker (PEP 668) is removed;
#   - groupadd/useradd are there (the passwd package is part of minbase);
#   - no apt lists, caches, docs or man pages (the standard library keeps its bytecode: the
#     images run with a read-only root filesystem, so nothing could be compiled at start).
# Changing this file changes the base image's content key, so every image is rebuilt.
set -eu

[ -x /usr/bin/python3 ] || { echo "base-image.sh: no python3 in the root filesystem" >&2; exit 1; }
for tool in useradd groupadd; do
  command -v "$tool" >/dev/null || { echo "base-image.sh: $tool missing" >&2; exit 1; }
done

rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
mkdir -p /usr/local/bin
ln -sf /usr/bin/python3 /usr/local/bin/python
ln -sf /usr/bin/pip3 /usr/local/bin/pip

# Debian's resolv.conf and hostname come from the build machine; the runtime provides both.
: > /etc/resolv.conf
rm -f /etc/hostname

rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
  /var/cache/debconf/*-old /var/log/* /usr/share/doc/* /usr/share/man/* /usr/share/info/* \
  /usr/share/locale/* /tmp/* /root/.cache
