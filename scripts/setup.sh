#!/usr/bin/env bash
# Installs Pallet and what it and its tests need on Debian 12, as root: Debian packages with apt-get,
# Python packages into .venv beside this checkout. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(python3 python3-venv busybox-static runc crun tini uidmap iproute2 iptables libseccomp2
      containerd podman docker.io skopeo umoci containernetworking-plugins fuse-overlayfs slirp4netns
      docker-registry docker-compose openssl zstd file procps util-linux kmod
      user-mode-linux)  # a pure cgroup v2 kernel for tests/integration/cgroups/test_pure_v2_vm.py
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# containerd and dockerd from the packages must not stay running as services: tests start their own.
for svc in containerd docker docker-registry; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done
if [ ! -x .venv/bin/python ]; then /usr/bin/python3 -m venv .venv; fi
# compat mode: a plain path in a .pth file; the default import-hook finder costs ~8 ms at every start
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
