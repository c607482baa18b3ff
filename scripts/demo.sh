#!/usr/bin/env bash
# The main job: sets Pallet up, makes an OCI bundle from Debian's busybox-static and runs it with
# pallet-runtime. Usage: scripts/demo.sh [COMMAND...]   (default: a shell line that shows the container)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
bundle=$(mktemp -d /tmp/pallet-demo.XXXXXX)
trap 'rm -rf "$bundle"' EXIT
.venv/bin/python -c "from pathlib import Path; from tests.helpers.rootfs import make_busybox_rootfs as m; m(Path('$bundle/rootfs'))"
.venv/bin/pallet-runtime spec --bundle "$bundle"
if [ $# -eq 0 ]; then set -- sh -c 'echo "hello from pallet: pid $$ on $(hostname)"; ps; id'; fi
.venv/bin/python - "$bundle/config.json" "$@" <<'PY'
import json, sys
path, args = sys.argv[1], sys.argv[2:]
cfg = json.load(open(path))
cfg["process"]["args"] = args
cfg["process"]["terminal"] = sys.stdin.isatty() and sys.stdout.isatty()
json.dump(cfg, open(path, "w"), indent=2)
PY
set +e
.venv/bin/pallet-runtime --root /run/pallet-demo run --bundle "$bundle" "pallet-demo-$$"
rc=$?
echo "container exited with status $rc" >&2
exit $rc
