"""CNI plugin chains, run as libcni does (CNI spec 1.0: "Execution of Network Configuration Lists").

ADD runs the plugins in order, each given the previous one's result as ``prevResult``; the last result
is cached under the engine root (never /var/lib/cni) with the exact configs used, because DEL and
CHECK must see what ADD saw: they run with that cached result as ``prevResult``, DEL in reverse order.
A plugin reports failure as a JSON error on stdout and a non-zero exit; that becomes one line naming
the plugin and the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pallet.errors import FailedPrecondition

CNI_PATH = os.environ.get("PALLET_CNI_PATH", "/usr/lib/cni:/opt/cni/bin")
VERSION = "1.0.0"


def _find(plugin: str) -> str:
    for d in CNI_PATH.split(":"):
        p = os.path.join(d, plugin)
        if os.access(p, os.X_OK):
            return p
    raise FailedPrecondition(f'CNI plugin "{plugin}" not found in {CNI_PATH}')


def _exec(command: str, conf: dict[str, Any], cid: str, netns: str, ifname: str) -> dict[str, Any]:
    plugin = conf["type"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": CNI_PATH,
    }
    import subprocess  # user networks only: `run --network none` never loads it

    p = subprocess.run([_find(plugin)], input=json.dumps(conf).encode(), env=env, capture_output=True)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        try:
            err = json.loads(out)
            msg = err.get("msg", "") + (f": {err['details']}" if err.get("details") else "")
        except ValueError:
            msg = (out or p.stderr.decode(errors="replace")).strip() or f"exit status {p.returncode}"
        raise FailedPrecondition(f'network "{conf["name"]}": plugin {plugin} {command} failed: {msg}')
    if command != "ADD":
        return {}
    result: dict[str, Any] = json.loads(out) if out.strip() else {}
    return result


class Chain:
    """One network's plugin list run for one container; ``cache`` holds what DEL needs."""

    def __init__(self, conflist: dict[str, Any], cache_dir: Path) -> None:
        self.conflist = conflist
        self.cache_dir = cache_dir

    def _cache(self, cid: str, ifname: str) -> Path:
        return self.cache_dir / f"{self.conflist['name']}-{cid}-{ifname}.json"

    def _confs(self, runtime: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for p in self.conflist["plugins"]:
            conf = {"cniVersion": self.conflist["cniVersion"], "name": self.conflist["name"], **p}
            caps = [k for k, on in (p.get("capabilities") or {}).items() if on and k in runtime]
            if caps:
                conf["runtimeConfig"] = {k: runtime[k] for k in caps}
            out.append(conf)
        return out

    def add(self, cid: str, netns: str, ifname: str, runtime: dict[str, Any]) -> dict[str, Any]:
        confs = self._confs(runtime)
        cache = self._cache(cid, ifname)
        cache.parent.mkdir(parents=True, exist_ok=True)
        # written before ADD: a crash midway leaves what DEL needs to undo the plugins that ran
        _write(cache, {"confs": confs, "netns": netns, "result": None})
        result: dict[str, Any] | None = None
        try:
            for conf in confs:
                if result is not None:
                    conf = conf | {"prevResult": result}
                result = _exec("ADD", conf, cid, netns, ifname)
        except BaseException:
            try:
                self.delete(cid, ifname)
            except FailedPrecondition:
                pass  # the ADD's error is the one to report; DEL of what never ran may fail too
            raise
        _write(cache, {"confs": confs, "netns": netns, "result": result})
        return result or {}

    def check(self, cid: str, ifname: str) -> None:
        saved = json.loads(self._cache(cid, ifname).read_text())
        for conf in saved["confs"]:
            _exec("CHECK", conf | {"prevResult": saved["result"]}, cid, saved["netns"], ifname)

    def delete(self, cid: str, ifname: str) -> None:
        """DEL in reverse order from the cache; every plugin runs even if one fails (DEL must be
        idempotent per the spec); the first failure is raised once all have run."""
        cache = self._cache(cid, ifname)
        try:
            saved = json.loads(cache.read_text())
        except (OSError, ValueError):
            return
        from pallet.engine.network.netns import is_mounted

        first: Exception | None = None
        # a namespace that is gone (a reboot, a crash) is passed as none: the spec lets DEL clean up
        # the host's side (lease, rules) without it
        netns = saved["netns"] if os.path.exists(saved["netns"]) and is_mounted(saved["netns"]) else ""
        for conf in reversed(saved["confs"]):
            if saved["result"] is not None:
                conf = conf | {"prevResult": saved["result"]}
            try:
                _exec("DEL", conf, cid, netns, ifname)
            except FailedPrecondition as e:
                if netns:
                    try:  # the host's side at least, whatever state the namespace is in
                        _exec("DEL", conf, cid, "", ifname)
                        continue
                    except FailedPrecondition:
                        pass
                first = first or e
        if first is not None:
            raise first
        cache.unlink()


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
