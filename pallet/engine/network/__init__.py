"""Container networking: network records, network namespaces, CNI plugin chains, published ports,
isolation rules and each container's /etc/hosts (names resolve between peers of user networks)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~1.8 ms of every `pallet run`: annotations only
    from typing import Any


# every container's /etc/hosts starts as docker's
BASE_HOSTS = (
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
)
# what Networks.attach reads beside the mode: with none of them, --network none and host need nothing
_OPTIONS = (
    "PortSpecs",
    "PublishAllPorts",
    "IPAddress",
    "Aliases",
    "ExtraHosts",
    "Dns",
    "DnsSearch",
    "DnsOptions",
)


def has_sandbox(host: dict[str, Any]) -> bool:
    """Does a container with this HostConfig get network state (``Networks.attach``)? Not with
    ``--network none`` or ``host`` and no network option: their hosts and resolv.conf are the ones
    the engine writes at create, so ``run`` neither imports the network manager nor opens its store."""
    mode = host.get("NetworkMode") or "none"
    return mode not in ("none", "host") or any(host.get(k) for k in _OPTIONS)
