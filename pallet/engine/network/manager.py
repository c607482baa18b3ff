"""Networks as dockerd keeps them: ``create/ls/inspect/rm/prune``, containers joining at create and
leaving at rm (``connect``/``disconnect`` in between), the default ``bridge`` network, published ports,
and each container's /etc/hosts and /etc/resolv.conf.

Order of a container's join, each step recorded before it is made so that ``repair`` can undo a crash:
sandbox row → namespace file → per network: endpoint row (no address yet) → CNI ADD (veth, address,
lease, masquerade, port rules) → address recorded → hosts files of the container and of its peers.
Leaving runs the same steps backwards, every one idempotent.

The default ``bridge`` network exists as a record always, but holds host state (bridge, rules, a
subnet) only while a container is on it, so that an engine's default network leaves nothing behind.
All host-state changes run under one host-wide lock, because subnets and bridge names are host-wide.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pallet.engine.network import BASE_HOSTS, bridge, cni, netns, ports
from pallet.engine.network.store import NetworkStore
from pallet.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound

DEFAULT = "bridge"
PREDEFINED = ("bridge", "host", "none")
AUTO_POOL = ipaddress.ip_network("10.89.0.0/16")  # carved into /24s, as podman's default pool
LOCK = "/run/lock/pallet-network.lock"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@contextmanager
def host_lock() -> Iterator[None]:
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _overlaps(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_network(a, strict=False).overlaps(ipaddress.ip_network(b, strict=False))
    except ValueError:
        return False


def is_user_network(mode: str) -> bool:
    return mode not in ("", "none", "host", "default", DEFAULT) and not mode.startswith("container:")


class Networks:
    def __init__(self, root: Path, runroot: Path) -> None:
        self.root = Path(root)
        self.runroot = Path(runroot)
        self.store = NetworkStore(self.root / "engine" / "networks.db")
        self.cni_dir = self.root / "network"

    def close(self) -> None:
        self.store.close()

    def netns_path(self, cid: str) -> str:
        return str(self.runroot / "netns" / cid[:12])

    # -- networks ------------------------------------------------------------------------------------
    def get(self, ref: str) -> dict[str, Any]:
        if ref == DEFAULT:
            self._default()
        return self.store.network(ref)

    def all(self) -> list[dict[str, Any]]:
        self._default()
        return self.store.networks()

    def _default(self) -> dict[str, Any]:
        try:
            return self.store.network(DEFAULT)
        except NotFound:
            pass
        try:
            self.store.add_network(
                os.urandom(32).hex(), DEFAULT,
                {"Driver": "bridge", "Default": True, "Internal": False, "Labels": {}, "Subnet": "",
                 "Gateway": "", "Bridge": ""},
            )  # fmt: skip
        except Exception:
            pass  # another process made it first
        return self.store.network(DEFAULT)

    def create(
        self,
        name: str,
        subnet: str = "",
        gateway: str = "",
        internal: bool = False,
        labels: dict[str, str] | None = None,
        driver: str = "bridge",
    ) -> dict[str, Any]:
        if driver != "bridge":
            raise InvalidArgument(f'plugin "{driver}" not found: only the bridge driver is supported')
        if name in PREDEFINED:
            raise Conflict(f"operation is not permitted on predefined {name} network")
        if not name or not name[0].isalnum() or set(name) - _NAME_OK:
            raise InvalidArgument(f'invalid network name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] allowed')
        net, gw = self._check_subnet(subnet, gateway)
        nid = os.urandom(32).hex()
        config = {"Driver": "bridge", "Default": False, "Internal": internal, "Labels": labels or {},
                  "Subnet": "", "Gateway": "", "Bridge": ""}  # fmt: skip
        self.store.add_network(nid, name, config)  # the name is taken first: two creates, one wins
        try:
            with host_lock():
                self._materialize(nid, name, config, net, gw)
        except BaseException:
            self.store.del_network(nid)
            raise
        return self.store.network(nid)

    def _check_subnet(self, subnet: str, gateway: str) -> tuple[Any, Any]:
        net = gw = None
        if subnet:
            try:
                net = ipaddress.ip_network(subnet, strict=False)
            except ValueError:
                raise InvalidArgument(f"invalid subnet {subnet}: invalid CIDR address") from None
            if net.version != 4 or net.prefixlen > 30:
                raise InvalidArgument(f"invalid subnet {subnet}: only IPv4 subnets of /30 or larger")
        if gateway:
            if net is None:
                raise InvalidArgument("every ip-range or gateway must have a corresponding subnet")
            try:
                gw = ipaddress.ip_address(gateway)
            except ValueError:
                raise InvalidArgument(f"invalid gateway address {gateway}") from None
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise InvalidArgument(f"no matching subnet for gateway {gateway}")
        return net, gw

    def _materialize(self, nid: str, name: str, config: dict[str, Any], net: Any, gw: Any) -> None:
        """Under the host lock: pick or check the subnet against our records and the host's routes,
        then make the bridge and its rules; the record gains them only when they exist."""
        used = [n["Subnet"] for n in self.store.networks() if n["Subnet"] and n["Id"] != nid]
        used += bridge.host_routes()
        if net is None:
            for cand in AUTO_POOL.subnets(new_prefix=24):
                if not any(_overlaps(str(cand), u) for u in used if u != "default"):
                    net = cand
                    break
            else:
                raise FailedPrecondition("could not find an available, non-overlapping IPv4 address pool")
        else:
            for u in used:
                if u != "default" and _overlaps(str(net), u):
                    raise Conflict(
                        f"invalid pool request: Pool overlaps with other one on this address space ({u})"
                    )
        gw = gw or next(net.hosts())
        for _ in range(16):
            br = bridge.PREFIX + os.urandom(3).hex()
            if not bridge.link_exists(br):
                break
        # recorded before it exists: a process killed midway leaves a record that names what to undo
        config.update(Subnet=str(net), Gateway=str(gw), Bridge=br)
        self.store.set_network(nid, _conf(config))
        try:
            bridge.create(nid, name, br, str(gw), net.prefixlen, bool(config["Internal"]), str(net))
        except BaseException:
            config.update(Subnet="", Gateway="", Bridge="")
            self.store.set_network(nid, _conf(config))
            raise

    def _dematerialize(self, n: dict[str, Any]) -> None:
        if n["Bridge"]:
            bridge.delete(n["Id"], n["Bridge"])
        shutil.rmtree(self.cni_dir / "ipam" / self._cni_name(n), ignore_errors=True)

    def remove(self, ref: str) -> dict[str, Any]:
        n = self.get(ref)
        if n["Name"] in PREDEFINED:
            raise Conflict(f"{n['Name']} is a pre-defined network and cannot be removed")
        if self.store.endpoints(nid=n["Id"]):
            raise Conflict(
                f"error while removing network: network {n['Name']} id {n['Id']} has active endpoints"
            )
        with host_lock():
            self._dematerialize(n)
        self.store.del_network(n["Id"])
        return n

    def prune(self) -> list[str]:
        """Unused user networks, after repairing what crashed containers left."""
        self.repair()
        gone = []
        for n in self.store.networks():
            if n["Name"] not in PREDEFINED and not self.store.endpoints(nid=n["Id"]):
                self.remove(n["Id"])
                gone.append(n["Name"])
        return gone

    # -- CNI ----------------------------------------------------------------------------------------
    @staticmethod
    def _cni_name(n: dict[str, Any]) -> str:
        return "pallet-" + str(n["Id"])[:12]

    def _chain(self, n: dict[str, Any], publish: bool) -> cni.Chain:
        ipam: dict[str, Any] = {
            "type": "host-local",
            "ranges": [[{"subnet": n["Subnet"], "gateway": n["Gateway"]}]],
            "dataDir": str(self.cni_dir / "ipam"),
        }
        if not n["Internal"]:
            ipam["routes"] = [{"dst": "0.0.0.0/0"}]
        conflist: dict[str, Any] = {
            "cniVersion": cni.VERSION,
            "name": self._cni_name(n),
            "plugins": [
                {"type": "bridge", "bridge": n["Bridge"], "isGateway": True, "ipMasq": False,
                 "hairpinMode": True, "ipam": ipam, "capabilities": {"ips": True}},
            ],
        }  # fmt: skip
        if publish:  # portmap only for a container that publishes: DEL reads the chain from the cache
            conflist["plugins"].append(
                {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}}
            )
        return cni.Chain(conflist, self.cni_dir / "cache")

    # -- containers -----------------------------------------------------------------------------------
    def attach(self, cid: str, name: str, files: Path, cfg: dict[str, Any], host: dict[str, Any]) -> None:
        """A new container joins its network (``host["NetworkMode"]``): its namespace, addresses,
        published ports, hosts and resolv.conf. On failure everything made here is undone."""
        mode = host.get("NetworkMode") or "none"
        if mode == "default":
            mode = DEFAULT
        maps: list[dict[str, Any]] = []
        for p in host.get("PortSpecs") or []:
            maps += ports.parse(p)
        if host.get("PublishAllPorts"):
            maps += ports.exposed((cfg.get("ExposedPorts") or {}) | (host.get("ExposedPorts") or {}))
        if maps and mode in ("none", "host") or maps and mode.startswith("container:"):
            maps = [] if mode == "host" else maps
            if maps:
                raise InvalidArgument(
                    "conflicting options: port publishing and the container type network mode"
                )
        ip = host.get("IPAddress") or ""
        aliases = list(host.get("Aliases") or [])
        if (ip or aliases) and not is_user_network(mode):
            raise InvalidArgument(
                "user specified IP address and aliases are supported on user defined networks only"
            )
        sb: dict[str, Any] = {
            "netns": "", "name": name, "hostname": cfg.get("Hostname") or cid[:12], "files": str(files),
            "mode": mode, "ports": [], "extra_hosts": list(host.get("ExtraHosts") or []),
            "dns": list(host.get("Dns") or []), "dns_search": list(host.get("DnsSearch") or []),
            "dns_options": list(host.get("DnsOptions") or []),
        }  # fmt: skip
        for h in sb["extra_hosts"]:
            _, addr = _host_entry(h)
            try:
                ipaddress.ip_address(addr if addr != "host-gateway" else "127.0.0.1")
            except ValueError:
                raise InvalidArgument(f"invalid IP address in add-host: {addr!r}") from None
        if mode.startswith("container:"):
            sb["netns"] = ""  # the engine joins the other container's namespace; nothing of ours to make
            self._share_files(mode.split(":", 1)[1], files)
        elif mode not in ("none", "host"):
            net = self.get(mode)
            if ip:
                try:
                    ok = ipaddress.ip_address(ip) in ipaddress.ip_network(net["Subnet"])
                except ValueError:
                    ok = False
                if not ok:
                    raise InvalidArgument(
                        f"invalid IP address {ip}: not in the subnet of network {net['Name']}"
                    )
            sb["netns"] = self.netns_path(cid)
        self.store.put_sandbox(cid, sb)
        try:
            if sb["netns"]:
                netns.create(sb["netns"])
                self._join(cid, sb, net, aliases, ip, maps)
            self.write_files(cid)
        except BaseException:
            self.detach(cid)
            raise

    def _join(
        self, cid: str, sb: dict[str, Any], n: dict[str, Any], aliases: list[str], ip: str,
        maps: list[dict[str, Any]],
    ) -> None:  # fmt: skip
        with host_lock():
            if maps:
                taken = {(m["protocol"], m["hostPort"], m["hostIP"] or "0.0.0.0")
                         for c, s in self.store.sandboxes().items() if c != cid for m in s.get("ports") or []}  # fmt: skip
                ports.reserve(maps, taken | bridge.hostports())
            n = self.store.network(n["Id"])
            if not n["Bridge"]:  # the default network, made on its first container
                self._materialize(n["Id"], n["Name"], n, None, None)
            elif not bridge.link_exists(n["Bridge"]):  # gone with a reboot: made again as recorded
                net = ipaddress.ip_network(n["Subnet"])
                bridge.delete(n["Id"], n["Bridge"])  # rules a lost link left
                bridge.create(
                    n["Id"], n["Name"], n["Bridge"], n["Gateway"], net.prefixlen, n["Internal"], str(net)
                )
            used = {e[2]["ifname"] for e in self.store.endpoints(cid=cid)}
            ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in used)
            ep: dict[str, Any] = {"ifname": ifname, "ip": "", "mac": "", "aliases": aliases}
            self.store.put_endpoint(cid, n["Id"], ep)
            runtime: dict[str, Any] = {}
            if maps:
                runtime["portMappings"] = [{k: v for k, v in m.items() if k != "hostIP" or v} for m in maps]
                sb["ports"] = maps
                self.store.put_sandbox(cid, sb)
            if ip:
                runtime["ips"] = [ip]
            result = self._chain(n, bool(maps)).add(cid, sb["netns"], ifname, runtime)
        for a in result.get("ips") or []:
            ep["ip"] = a["address"].split("/")[0]
            ep["prefix"] = int(a["address"].split("/")[1])
            ep["gateway"] = a.get("gateway", "")
            break
        for i in result.get("interfaces") or []:
            if i.get("sandbox"):
                ep["mac"] = i.get("mac", "")
        self.store.put_endpoint(cid, n["Id"], ep)
        for peer, _, _ in self.store.endpoints(nid=n["Id"]):
            if peer != cid and not n["Default"]:
                self.write_files(peer)

    def connect(self, cid: str, ref: str, aliases: list[str], ip: str = "") -> None:
        sb = self.store.sandbox(cid)
        n = self.get(ref)
        if sb is None or not sb["netns"]:
            raise FailedPrecondition(
                f"container {cid[:12]}: cannot connect: it has no network namespace of its own"
            )
        if any(e[1] == n["Id"] for e in self.store.endpoints(cid=cid)):
            raise Conflict(f"endpoint with name {sb['name']} already exists in network {n['Name']}")
        try:
            self._join(cid, sb, n, aliases, ip, [])
        except BaseException:
            self._leave(cid, n["Id"])
            raise
        self.write_files(cid)

    def disconnect(self, cid: str, ref: str) -> None:
        n = self.get(ref)
        if not any(e[1] == n["Id"] for e in self.store.endpoints(cid=cid)):
            raise NotFound(f"container {cid[:12]} is not connected to network {n['Name']}")
        self._leave(cid, n["Id"])
        self.write_files(cid)

    def _leave(self, cid: str, nid: str) -> None:
        eps = {e[1]: e[2] for e in self.store.endpoints(cid=cid)}
        ep = eps.get(nid)
        if ep is None:
            return
        peers = [c for c, _, _ in self.store.endpoints(nid=nid) if c != cid]
        with host_lock():
            try:
                n = self.store.network(nid)
            except NotFound:
                n = None
            if n is not None and n["Bridge"]:
                self._chain(n, False).delete(cid, ep["ifname"])
            self.store.del_endpoint(cid, nid)
            self._release_default()
        for c in peers:
            self.write_files(c)

    def _release_default(self) -> None:
        """Under the host lock: the default network's host state goes with its last container."""
        try:
            n = self.store.network(DEFAULT)
        except NotFound:
            return
        if n["Bridge"] and not self.store.endpoints(nid=n["Id"]):
            self._dematerialize(n)
            n.update(Subnet="", Gateway="", Bridge="")
            self.store.set_network(n["Id"], _conf(n))

    def detach(self, cid: str) -> None:
        """Everything of a container's network goes: endpoints, namespace, record. Idempotent."""
        sb = self.store.sandbox(cid)
        for _, nid, _ in self.store.endpoints(cid=cid):
            self._leave(cid, nid)
        if sb and sb["netns"]:
            netns.delete(sb["netns"])
        self.store.del_sandbox(cid)
        if sb and sb["mode"] == DEFAULT:
            with host_lock():
                self._release_default()  # made for a join that then failed

    def _share_files(self, ref: str, files: Path) -> None:
        """--network container:NAME: that container's hosts and resolv.conf, as docker shares them
        (copied at create: later changes to the other's peers are not followed)."""
        from pallet.engine.store import ContainerStore

        cs = ContainerStore(self.root / "engine" / "containers.db")
        try:
            other = cs.get(ref).id
        finally:
            cs.close()
        sb = self.store.sandbox(other)
        if sb is None:
            return
        for name in ("hosts", "resolv.conf"):
            try:
                text = (Path(sb["files"]) / name).read_text()
            except OSError:
                continue
            if (files / name).exists():
                _write_in_place(files / name, text)

    def repair(self) -> list[str]:
        """Sandboxes whose container record is gone (a crash between the two): undone."""
        from pallet.engine.store import ContainerStore

        cs = ContainerStore(self.root / "engine" / "containers.db")
        try:
            live = {r.id for r in cs.all()}
        finally:
            cs.close()
        gone = [c for c in self.store.sandboxes() if c not in live]
        for c in gone:
            self.detach(c)
        with host_lock():
            self._release_default()  # a bridge made by a create killed before its endpoint was recorded
        return gone

    def ensure(self, cid: str) -> str:
        """The container's namespace for a start, made again with its endpoints (same addresses,
        aliases and host ports) if it is gone: a reboot empties the runroot and the host's links."""
        sb = self.store.sandbox(cid)
        if not sb or not sb["netns"]:
            return ""
        if os.path.exists(sb["netns"]) and netns.is_mounted(sb["netns"]):
            return str(sb["netns"])
        eps = self.store.endpoints(cid=cid)
        for _, nid, _ in eps:
            self._leave(cid, nid)
        netns.delete(sb["netns"])
        netns.create(sb["netns"])
        for i, (_, nid, ep) in enumerate(eps):
            n = self.store.network(nid)
            ip = "" if n["Default"] else ep.get("ip", "")  # the default network may get a new subnet
            self._join(cid, sb, n, ep.get("aliases") or [], ip, list(sb["ports"]) if i == 0 else [])
        self.write_files(cid)
        return str(sb["netns"])

    def sandbox_key(self, cid: str) -> str:
        sb = self.store.sandbox(cid)
        return str(sb["netns"]) if sb else ""

    def published(self, cid: str) -> list[dict[str, Any]]:
        sb = self.store.sandbox(cid)
        return list(sb.get("ports") or []) if sb else []

    def endpoints_of(self, cid: str) -> dict[str, dict[str, Any]]:
        """network name → endpoint (ip, mac, gateway, aliases) for inspect."""
        out = {}
        for _, nid, ep in self.store.endpoints(cid=cid):
            out[self.store.network(nid)["Name"]] = ep | {"NetworkID": nid}
        return out

    def containers_of(self, nid: str) -> dict[str, dict[str, Any]]:
        out = {}
        for c, _, ep in self.store.endpoints(nid=nid):
            sb = self.store.sandbox(c) or {}
            out[c] = {"Name": sb.get("name", ""), "MacAddress": ep.get("mac", ""),
                      "IPv4Address": f"{ep['ip']}/{ep.get('prefix', 24)}" if ep.get("ip") else "",
                      "IPv6Address": ""}  # fmt: skip
        return out

    # -- files ----------------------------------------------------------------------------------------
    def write_files(self, cid: str) -> None:
        """The container's hosts (itself, --add-host, and on user networks every peer by name and
        alias) and resolv.conf; written in place, because a bind mount pins the file's inode. Read
        and written under the engine's files lock: two joins at once must not write a stale view last."""
        self.cni_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cni_dir / "files.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._write_files(cid)
        finally:
            os.close(fd)

    def _write_files(self, cid: str) -> None:
        sb = self.store.sandbox(cid)
        if sb is None or sb["mode"].startswith("container:"):
            return
        files = Path(sb["files"])
        lines = [BASE_HOSTS.rstrip("\n")]
        eps = self.store.endpoints(cid=cid)
        # host-gateway: the host as the container reaches it, its first network's gateway (docker's
        # default bridge gateway); with --network host the host is the container's own loopback
        gw = next((e[2]["gateway"] for e in eps if e[2].get("gateway")), "127.0.0.1")
        for h in sb["extra_hosts"]:
            name, addr = _host_entry(h)
            lines.append(f"{gw if addr == 'host-gateway' else addr}\t{name}")
        seen = set()
        for _, nid, ep in eps:
            n = self.store.network(nid)
            if ep.get("ip"):
                lines.append(f"{ep['ip']}\t{sb['hostname']}")
            if n["Default"]:
                continue
            for peer, _, pep in self.store.endpoints(nid=nid):
                psb = self.store.sandbox(peer)
                if peer == cid or psb is None or not pep.get("ip") or (peer, pep["ip"]) in seen:
                    continue
                seen.add((peer, pep["ip"]))
                names = [psb["name"], *pep.get("aliases", []), peer[:12]]
                lines.append(f"{pep['ip']}\t{' '.join(dict.fromkeys(names))}")
        if (files / "hosts").exists() and sb["mode"] != "host":
            _write_in_place(files / "hosts", "\n".join(lines) + "\n")
        if (files / "resolv.conf").exists() and (sb["dns"] or sb["dns_search"] or sb["dns_options"]):
            _write_in_place(
                files / "resolv.conf", resolv_conf(sb["dns"], sb["dns_search"], sb["dns_options"])
            )


def _conf(n: dict[str, Any]) -> dict[str, Any]:
    """A network's stored config: the record less the columns of its own."""
    return {k: v for k, v in n.items() if k not in ("Id", "Name", "Created")}


def _host_entry(h: str) -> tuple[str, str]:
    """--add-host name:ip or name=ip (the first separator splits, so name:::1 is ::1; [::1] too)."""
    name, _, addr = h.partition("=") if "=" in h else h.partition(":")
    return name, addr.strip("[]")


def resolv_conf(dns: list[str], search: list[str], options: list[str]) -> str:
    """docker's: the host's file with --dns/--dns-search/--dns-option replacing its lines; no
    localhost resolver (unreachable from a container's namespace), then Google's as docker falls back."""
    try:
        host = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        host = []
    servers = dns or [
        ln.split()[1] for ln in host if ln.startswith("nameserver") and len(ln.split()) > 1
        and not ln.split()[1].startswith(("127.", "::1"))
    ] or ["8.8.8.8", "8.8.4.4"]  # fmt: skip
    srch = search or [w for ln in host if ln.startswith("search") for w in ln.split()[1:]]
    opts = options or [w for ln in host if ln.startswith("options") for w in ln.split()[1:]]
    out = [f"nameserver {s}" for s in servers]
    if srch and srch != ["."]:
        out.append("search " + " ".join(srch))
    if opts:
        out.append("options " + " ".join(opts))
    return "\n".join(out) + "\n"


def _write_in_place(path: Path, text: str) -> None:
    with open(path, "r+") as f:
        f.write(text)
        f.truncate()
