"""Containers on networks: names, isolation, --internal, published ports, the network flags of run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from tests.integration.network.conftest import HTTPD, NetPallet, free_port, free_subnet

# busybox-static's wget crashes in a container (glibc's static getaddrinfo without NSS modules), so
# HTTP goes through nc
GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2"


def _wait_http(url: str, timeout: float = 10) -> str:
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def test_names_resolve_on_a_user_network_and_networks_are_isolated(net: NetPallet) -> None:
    a, _ = net.network("a")
    b, _ = net.network("b")
    web = net.name("web")
    net.run("-d", "--name", web, "--hostname", "webhost", "--network", a, "--network-alias", "site",
            "busybox", "sh", "-c", HTTPD)  # fmt: skip
    ip = json.loads(net("inspect", "-f", "{{json .NetworkSettings.Networks}}", web).stdout)[a]["IPAddress"]
    assert ip.startswith("10.88.")
    # by name and by alias, from a peer on the same network
    got = net.run("--rm", "--network", a, "busybox", "sh", "-c",
                  f"for i in 1 2 3 4 5 6 7 8 9 10; do {GET} {web} 80 && break; sleep 0.2; done; {GET} site 80;"
                  f" {GET} {ip} 80").stdout  # fmt: skip
    assert got.count("hello-webhost\n") == 3, got
    # another network reaches neither the name nor the address
    p = net.run("--rm", "--network", b, "busybox", "sh", "-c", f"{GET} {ip} 80", check=False)
    assert p.returncode != 0 and "hello" not in p.stdout
    p = net.run("--rm", "--network", b, "busybox", "ping", "-c1", "-W1", web, check=False)
    assert p.returncode != 0 and "bad address" in p.stderr
    # connect puts the peer into the hosts file of both, disconnect takes it out again
    other = net.name("other")
    net.run("-d", "--name", other, "--network", b, "busybox", "sleep", "60")
    net("network", "connect", "--alias", "late", a, other)
    assert "hello-webhost" in net("exec", other, "sh", "-c", f"{GET} {web} 80").stdout
    assert "late" in net("exec", web, "cat", "/etc/hosts").stdout
    assert other in net("network", "inspect", "-f", "{{json .Containers}}", a).stdout
    net("network", "disconnect", a, other)
    assert "late" not in net("exec", web, "cat", "/etc/hosts").stdout
    p = net("exec", other, "sh", "-c", f"{GET} {ip} 80", check=False)
    assert p.returncode != 0 and "hello" not in p.stdout
    p = net("network", "rm", a, check=False)
    assert p.returncode != 0 and "active endpoints" in p.stderr
    net("rm", "-f", web, other)
    assert all(s.startswith(("link", "rules of network")) for s in net.host_state())
    net("network", "rm", a, b)
    assert net.host_state() == []


def test_internal_network_has_no_way_out(net: NetPallet) -> None:
    name, subnet = net.network("int", "--internal")
    out = net.run(
        "--rm", "--network", name, "busybox", "sh", "-c", "ip route; ip route get 192.0.2.1 2>&1; true"
    ).stdout
    assert "default" not in out
    assert "unreachable" in out.lower()
    assert net("network", "inspect", "-f", "{{.Internal}}", name).stdout.strip() == "true"
    # an ordinary network has its default route through the gateway
    ordinary, sub2 = net.network("out")
    out = net.run("--rm", "--network", ordinary, "busybox", "ip", "route").stdout
    assert f"default via {sub2.rsplit('.', 1)[0]}.1" in out


def test_published_port_answers_on_loopback_and_from_another_host(net: NetPallet, token: str) -> None:
    port = free_port()
    web = net.name("pub")
    net.run("-d", "--name", web, "-p", f"{port}:80", "-p", "127.0.0.1::81/udp", "busybox", "sh", "-c", HTTPD)
    assert _wait_http(f"http://127.0.0.1:{port}/").startswith("hello-")
    lines = net("port", web).stdout.splitlines()
    assert f"80/tcp -> 0.0.0.0:{port}" in lines
    assert any(line.startswith("81/udp -> 127.0.0.1:") for line in lines)
    assert net("port", web, "80").stdout.strip() == f"0.0.0.0:{port}"
    assert f"0.0.0.0:{port}->80/tcp" in net("ps", "--format", "{{.Ports}}").stdout
    # the port is taken while the container holds it (portmap binds no socket: the engine checks)
    p = net.run("--rm", "-p", f"{port}:80", "busybox", "true", check=False)
    assert p.returncode == 125 and "already allocated" in p.stderr
    # -P: every exposed port (the image's and --expose) on a port of the host's choosing
    allp = net.name("all")
    net.run("-d", "--name", allp, "--expose", "8080", "--expose", "53/udp", "-P", "busybox", "sleep", "60")
    lines = net("port", allp).stdout.splitlines()
    assert sorted(line.split(" -> ")[0] for line in lines) == ["53/udp", "8080/tcp"], lines
    net("rm", "-f", allp)
    # a second machine: a namespace joined to the host by a veth pair, reaching the host's address
    ns, veth = f"{token}-peer", "pv" + token[-8:]
    x = free_subnet().split(".")[2]
    sh = [
        f"ip netns add {ns}", f"ip link add {veth} type veth peer name eth0 netns {ns}",
        f"ip addr add 10.88.{x}.1/30 dev {veth}", f"ip link set {veth} up",
        f"ip -n {ns} addr add 10.88.{x}.2/30 dev eth0", f"ip -n {ns} link set eth0 up", f"ip -n {ns} link set lo up",
    ]  # fmt: skip
    try:
        for c in sh:
            subprocess.run(c.split(), check=True, capture_output=True)
        fetch = f"import urllib.request as u; print(u.urlopen('http://10.88.{x}.1:{port}/', timeout=3).read().decode())"
        p = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", fetch], capture_output=True, text=True
        )
        assert p.stdout.startswith("hello-"), p.stderr
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    cid = net("inspect", "-f", "{{.Id}}", web).stdout.strip()
    net("rm", "-f", web)
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert cid not in nat and f"--dport {port}" not in nat
    # the default network leaves nothing once its last container is gone
    assert net.host_state() == []
    assert net("network", "inspect", "-f", "{{json .IPAM.Config}}", "bridge").stdout.strip() == "[]"


def test_run_flags_for_names_and_resolvers(net: NetPallet) -> None:
    name, subnet = net.network("f")
    ip = subnet.rsplit(".", 1)[0] + ".77"
    out = net.run("--rm", "--network", name, "--ip", ip, "--hostname", "h1", "--add-host", "db.example:10.1.2.3",
                  "--dns", "10.9.9.9", "--dns-search", "corp.example", "busybox", "sh", "-c",
                  "ip -4 addr show eth0; cat /etc/hosts /etc/resolv.conf; hostname").stdout  # fmt: skip
    assert f"inet {ip}/24" in out
    assert "10.1.2.3\tdb.example" in out
    assert f"{ip}\th1" in out
    assert "nameserver 10.9.9.9" in out and "search corp.example" in out
    assert out.rstrip().endswith("h1")
    p = net.run("--rm", "--ip", "10.1.1.1", "busybox", "true", check=False)
    assert p.returncode == 125 and "user defined networks only" in p.stderr


def test_none_host_and_container_modes(net: NetPallet) -> None:
    assert (
        net.run("--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout.count(": ") == 2
    )  # lo only
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    eth = host_links.split(": ")[1]
    assert eth in net.run("--rm", "--network", "host", "busybox", "ip", "-o", "link").stdout
    first = net.name("first")
    net.run("-d", "--name", first, "busybox", "sleep", "60")
    ip = net("inspect", "-f", "{{.NetworkSettings.IPAddress}}", first).stdout.strip()
    out = net.run(
        "--rm", "--network", f"container:{first}", "busybox", "sh", "-c", "ip -4 addr; cat /etc/hosts"
    ).stdout
    assert f"inet {ip}/" in out
    assert f"{ip}\t" in out  # the other container's hosts file
    p = net.run("--rm", "--network", "container:nosuch", "busybox", "true", check=False)
    assert p.returncode == 125 and "No such container: nosuch" in p.stderr


def test_bad_input_is_refused_and_leaves_nothing(net: NetPallet) -> None:
    name, subnet = net.network("bad")
    p = net("network", "create", "--subnet", subnet.replace(".0/24", ".128/25"), net.name("ovl"), check=False)
    assert p.returncode == 125 and "overlaps" in p.stderr
    assert net.name("ovl") not in net("network", "ls").stdout
    p = net(
        "network", "create", "--subnet", "10.88.1.0/24", "--gateway", "10.99.0.1", net.name("gw"), check=False
    )
    assert p.returncode == 125 and "gateway" in p.stderr
    p = net.run("-p", "80:abc", "busybox", "true", check=False)
    assert p.returncode == 125 and "invalid port specification" in p.stderr
    p = net.run("--network", net.name("nope"), "busybox", "true", check=False)
    assert p.returncode == 125 and "not found" in p.stderr
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        taken = s.getsockname()[1]
        p = net.run("-p", f"{taken}:80", "busybox", "true", check=False)
    assert p.returncode == 125 and "already allocated" in p.stderr
    assert net("ps", "-aq").stdout == ""
    left = net.host_state()  # the network itself stays (bridge and rules); nothing of a container
    assert left and all(s.startswith(("link", "rules of network")) for s in left), left
    net("network", "rm", name)
    assert net.host_state() == []


def test_prune_repairs_what_a_crash_left(net: NetPallet) -> None:
    """A container record gone with its network still set up (a crash between the two): prune undoes it."""
    import sqlite3

    name, _ = net.network("crash")
    cid = net.run("-d", "--network", name, "-p", f"{free_port()}:80", "busybox", "sleep", "60").stdout.strip()
    net("rm", "-f", cid)  # the engine's own path; then simulate the crash with a second container
    cid = net("create", "--network", name, "busybox", "true").stdout.strip()
    con = sqlite3.connect(net.root / "engine" / "containers.db")
    con.execute("DELETE FROM containers WHERE id = ?", (cid,))
    con.commit()
    con.close()
    assert any(s.startswith("netns") for s in net.host_state())
    net("network", "prune", "-f")
    assert net.host_state() == []
    assert name not in net("network", "ls").stdout


def test_containers_joining_at_once_all_see_each_other(net: NetPallet) -> None:
    name, _ = net.network("many")
    names = [net.name(f"m{i}") for i in range(4)]
    procs = [
        subprocess.Popen(
            net.cmd(
                "run",
                "-d",
                "--cgroup-parent",
                f"/{net.token}",
                "--name",
                n,
                "--network",
                name,
                "busybox",
                "sleep",
                "60",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for n in names
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    ips = {n: json.loads(net("inspect", "-f", "{{json .NetworkSettings.Networks}}", n).stdout)[name]["IPAddress"]
           for n in names}  # fmt: skip
    assert len(set(ips.values())) == 4
    for n in names:
        hosts = net("exec", n, "cat", "/etc/hosts").stdout
        for other in names:
            if other != n:
                assert f"{ips[other]}\t{other} " in hosts, (n, hosts)


def test_start_after_a_reboot_makes_the_network_again(net: NetPallet) -> None:
    """A reboot empties the runroot (the namespace file) and the host's links and rules: start makes
    them again as recorded, with the same address on a user network and the same published port."""
    name, _ = net.network("boot")
    port = free_port()
    c = net.name("boot")
    net.run("-d", "--name", c, "--network", name, "-p", f"{port}:80", "busybox", "sh", "-c", HTTPD)
    ip = json.loads(net("inspect", "-f", "{{json .NetworkSettings.Networks}}", c).stdout)[name]["IPAddress"]
    net("stop", "-t", "1", c)
    key = net("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", c).stdout.strip()
    subprocess.run(["umount", key], check=True)
    br = json.loads(net("network", "inspect", name).stdout)[0]["Options"]["com.docker.network.bridge.name"]
    subprocess.run(["ip", "link", "del", br], check=True)
    net("start", c)
    assert f"inet {ip}/" in net("exec", c, "ip", "-4", "addr").stdout
    assert _wait_http(f"http://127.0.0.1:{port}/").startswith("hello-")
