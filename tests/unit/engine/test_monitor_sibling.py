"""The sibling protocol's checks (pallet/engine/monitor/sibling.py) and create_then_start's two pipes,
without root: a request a monitor must refuse, and a create that fails reports before any start."""

from __future__ import annotations

import json
import marshal
import os
import socket
from pathlib import Path

from pallet.engine.monitor import inproc, sibling
from pallet.engine.monitor.main import _fds

OWN = "/var/lib/pallet/containers/" + "a" * 64 + "/monitor.cfg"
OTHER = "/var/lib/pallet/containers/" + "b" * 64 + "/monitor.cfg"


def test_accepts_only_this_code_and_a_path_of_the_same_length() -> None:
    def body(cfg: str, tok: bytes = sibling.TOKEN) -> bytes:
        return b"\0".join([cfg.encode(), b"/run/pallet/c/bbbb/monitor.err", tok])

    err = "/run/pallet/c/bbbb/monitor.err"
    assert sibling.accepts(body(OTHER), OWN, 1) == (OTHER, err, b"")
    assert sibling.accepts(body(OTHER, b"/usr/bin/python3 1 2"), OWN, 1) is None  # another version
    assert sibling.accepts(body("/other/root/containers/" + "b" * 64 + "/monitor.cfg"), OWN, 1) is None
    assert sibling.accepts(b"garbage", OWN, 1) is None
    # request_early: a go pipe beside the sync pipe, and Early's settings, NULs and all, last
    early = marshal.dumps({"id": "b" * 64, "stdin": False, "pid_file": "/run/x\0y"})
    assert sibling.accepts(body(OTHER) + b"\0" + early, OWN, 2) == (OTHER, err, early)
    assert sibling.accepts(body(OTHER), OWN, 2) is None  # two fds, no settings
    assert sibling.accepts(body(OTHER) + b"\0" + early, OWN, 1) is None  # settings, one fd


def test_request_without_monitors_asks_nobody(tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        assert not sibling.request(str(tmp_path), OTHER, str(tmp_path / "err"), w)
        (tmp_path / "c" / "dead").mkdir(parents=True)
        (tmp_path / "c" / "dead" / "attach").touch()  # a socket path nobody listens on
        assert not sibling.request(str(tmp_path), OTHER, str(tmp_path / "err"), w)
    finally:
        os.close(r)
        os.close(w)


def test_fds_of_scm_rights() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    with a, b:
        socket.send_fds(a, [b"F"], [r, w])
        _, anc, _, _ = b.recvmsg(16, socket.CMSG_SPACE(8))
        got = _fds(anc)
    assert len(got) == 2
    for fd in (r, w, *got):
        os.close(fd)


def test_create_then_start_reports_a_failed_create_and_never_starts(tmp_path: Path) -> None:
    result_r, result_w = os.pipe()
    go_r, go_w = os.pipe()
    log = tmp_path / "runtime.log"
    args = ["create", "--bundle", str(tmp_path / "no-bundle"), "--pid-file", str(tmp_path / "pid"), "web"]
    code = inproc.create_then_start(
        str(tmp_path / "root"), str(log), args, result_w, go_r, str(tmp_path / "db")
    )
    assert code == 1
    assert os.read(result_r, 16) == b"1\n" and os.read(result_r, 16) == b""  # then EOF
    assert json.loads(log.read_text().splitlines()[-1])["level"] == "error"
    for fd in (result_r, go_r, go_w):
        os.close(fd)
