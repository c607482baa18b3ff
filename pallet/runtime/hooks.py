"""OCI hooks: each run with the container's state JSON on stdin, in order, with an optional timeout.

A failing prestart/createRuntime/createContainer/startContainer hook fails the operation; a failing
poststart or poststop hook is only reported (runtime-spec, "Lifecycle").
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class HookError(Exception):
    pass


def run_all(hooks: list[dict[str, Any]], state: dict[str, Any], kind: str) -> None:
    if not hooks:
        return
    import subprocess  # only when there are hooks: it costs every container start a few ms

    data = json.dumps(state).encode()
    for i, h in enumerate(hooks):
        args = h.get("args") or [h["path"]]
        env = dict(e.partition("=")[::2] for e in h.get("env") or [])
        try:
            r = subprocess.run(
                args,
                executable=h["path"],
                input=data,
                env=env,
                capture_output=True,
                timeout=h.get("timeout"),
                close_fds=True,
            )
        except subprocess.TimeoutExpired:
            raise HookError(f"{kind} hook #{i} {h['path']}: timed out after {h['timeout']}s") from None
        except OSError as e:
            raise HookError(f"{kind} hook #{i} {h['path']}: {e.strerror}") from None
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip().splitlines()
            tail = f": {err[-1]}" if err else ""
            raise HookError(f"{kind} hook #{i} {h['path']}: exited with status {r.returncode}{tail}")
