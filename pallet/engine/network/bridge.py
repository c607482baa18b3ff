"""A network's host side: its Linux bridge (made at ``network create``, so its subnet's route shows
every other engine on the host that the subnet is taken) and its filter rules.

Rules, in a chain of the network's own (PALLET-<id>) reached from FORWARD for traffic in or out of its
bridge (moby's DOCKER-ISOLATION stages, in one chain per network):
  in and out of the same bridge: accept (peers talk);
  from one pallet bridge (pl-*) to another: drop (networks are isolated);
  --internal: drop everything else (no way out, none in);
  otherwise: accept what leaves, and replies and published (DNAT) traffic that comes back.
Every rule carries a comment naming the network, so leftovers can be found by name.
"""

from __future__ import annotations

from pallet.errors import FailedPrecondition

PREFIX = "pl-"


def chain(nid: str) -> str:
    return "PALLET-" + nid[:12]


def _run(args: list[str], input: str | None = None, check: bool = True) -> str:
    import subprocess  # user networks only: `run --network none` never loads it

    p = subprocess.run(args, input=input, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise FailedPrecondition(f"{args[0]}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return p.stdout


def link_exists(name: str) -> bool:
    import subprocess

    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def create(
    nid: str, name: str, bridge: str, gateway: str, prefix: int, internal: bool, subnet: str = ""
) -> None:
    """The bridge with the gateway address, up, and its rules; undone whole if any step fails."""
    try:
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{gateway}/{prefix}", "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])
        c, tag = chain(nid), f'-m comment --comment "pallet network {name}"'
        rules = [
            f"-A {c} -i {bridge} -o {bridge} {tag} -j ACCEPT",
            f"-A {c} -i {PREFIX}+ -o {PREFIX}+ {tag} -j DROP",
        ]
        if internal:
            rules.append(f"-A {c} {tag} -j DROP")
        else:
            rules += [
                f"-A {c} -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT {tag} -j ACCEPT",
                f"-A {c} -i {bridge} {tag} -j ACCEPT",
            ]
        lines = ["*filter", f":{c} - [0:0]", *rules,
                 f"-I FORWARD 1 -o {bridge} {tag} -j {c}", f"-I FORWARD 1 -i {bridge} {tag} -j {c}", "COMMIT"]  # fmt: skip
        if not internal and subnet:
            # one masquerade rule per network, as docker's, rather than the bridge plugin's chain per
            # container (ipMasq): its iptables calls were most of a container's network setup time
            lines += ["*nat", f"-A POSTROUTING -s {subnet} ! -o {bridge} {tag} -j MASQUERADE", "COMMIT"]
        script = "\n".join([*lines, ""])
        _run(["iptables-restore", "-w", "--noflush"], input=script)
    except BaseException:
        delete(nid, bridge)
        raise


def delete(nid: str, bridge: str) -> None:
    """Idempotent: whatever of the rules and the bridge exists is removed."""
    c = chain(nid)
    script = []
    for table in ("filter", "nat"):
        saved = _run(["iptables-save", "-t", table], check=False)
        dels = [
            "-D" + line[2:]
            for line in saved.splitlines()
            if line.startswith(("-A FORWARD ", "-A POSTROUTING "))
            and (line.endswith(f"-j {c}") or f"! -o {bridge} " in line)
        ]
        if f":{c} " in saved:
            dels += [f"-F {c}", f"-X {c}"]
        if dels:
            script += [f"*{table}", *dels, "COMMIT"]
    if script:
        _run(["iptables-restore", "-w", "--noflush"], input="\n".join([*script, ""]))
    if link_exists(bridge):
        _run(["ip", "link", "del", bridge], check=False)


def hostports() -> set[tuple[str, int, str]]:
    """Host ports that portmap's DNAT rules already take, whichever engine made them (portmap binds
    no socket, so a bind test alone would not see another engine's published port)."""
    out = set()
    for line in _run(["iptables-save", "-t", "nat"], check=False).splitlines():
        f = line.split()
        if line.startswith("-A CNI-DN-") and "--dport" in f and "-p" in f:
            out.add((f[f.index("-p") + 1], int(f[f.index("--dport") + 1]), "0.0.0.0"))
    return out


def host_routes() -> list[str]:
    """Destinations of the host's IPv4 routes (to refuse a subnet that is in use)."""
    out = _run(["ip", "-4", "route", "show", "table", "all"], check=False)
    return [line.split()[0] for line in out.splitlines() if line and line.split()[0][0].isdigit()]
