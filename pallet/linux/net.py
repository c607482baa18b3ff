"""Interface flags through the classic socket ioctls: enough to bring up loopback in a new netns."""

from __future__ import annotations

import _socket
import fcntl
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: name, then the flags member of the union


def bring_up(ifname: str = "lo") -> None:
    """Set IFF_UP on ifname in the current network namespace (as `ip link set lo up`)."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM, 0)
    try:
        req = struct.pack(_IFREQ, ifname.encode(), 0)
        (_, flags) = struct.unpack(_IFREQ, fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack(_IFREQ, ifname.encode(), flags | IFF_UP))
    finally:
        s.close()
