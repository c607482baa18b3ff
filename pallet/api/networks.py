"""Network and volume endpoints: the networks engine (pallet.engine.network.manager) and the volume
store (pallet.engine.volumes), serialised as the CLI's ``network``/``volume`` verbs serialise them."""

from __future__ import annotations

import json
from typing import Any

from pallet.api.server import Request
from pallet.engine.views import network_get, network_inspect, network_list, network_match, volume_filter
from pallet.errors import InvalidArgument


def list_networks(req: Request) -> list[dict[str, Any]]:
    nets = req.engine.networks
    flat = [f"{k}={v}" for k, vs in req.filters().items() for v in vs]
    return [network_inspect(nets, n) for n in network_list(nets) if all(network_match(f, n) for f in flat)]


def inspect_network(req: Request) -> dict[str, Any]:
    nets = req.engine.networks
    return network_inspect(nets, network_get(nets, req.args["id"]))


def create_network(req: Request) -> None:
    body = req.body.json()
    name = body.get("Name") or ""
    if not name:
        raise InvalidArgument("network name is required")
    ipam = [c for c in ((body.get("IPAM") or {}).get("Config") or []) if c]
    if len(ipam) > 1:
        raise InvalidArgument("only one subnet per network is supported")
    first = ipam[0] if ipam else {}
    n = req.engine.networks.create(
        name,
        first.get("Subnet", ""),
        first.get("Gateway", ""),
        bool(body.get("Internal")),
        body.get("Labels") or {},
        body.get("Driver") or "bridge",
    )
    req.send(201, json.dumps({"Id": n["Id"], "Warning": ""}).encode())


def remove_network(req: Request) -> None:
    req.engine.networks.remove(req.args["id"])
    return None


def connect(req: Request) -> None:
    body = req.body.json()
    rec = req.engine.get(body.get("Container") or "")
    ep = body.get("EndpointConfig") or {}
    ip = (ep.get("IPAMConfig") or {}).get("IPv4Address") or ""
    req.engine.networks.connect(rec.id, req.args["id"], ep.get("Aliases") or [], ip)
    req.send(200, b"", "text/plain")


def disconnect(req: Request) -> None:
    body = req.body.json()
    rec = req.engine.get(body.get("Container") or "")
    req.engine.networks.disconnect(rec.id, req.args["id"])
    req.send(200, b"", "text/plain")


def prune_networks(req: Request) -> dict[str, Any]:
    return {"NetworksDeleted": req.engine.networks.prune() or None}


# -- volumes --------------------------------------------------------------------------------------------


def _volumes(req: Request) -> Any:
    from pallet.engine.volumes import Volumes

    return Volumes(req.server.root)


def _volume(v: dict[str, Any]) -> dict[str, Any]:
    v = dict(v)
    v.pop("Anonymous", None)
    return v | {"Scope": "local"}


def list_volumes(req: Request) -> dict[str, Any]:
    vols = _volumes(req)
    rows = vols.all()
    for k, vals in req.filters().items():
        for val in vals:
            kept = volume_filter(vols, rows, k, val)
            if kept is None:
                raise InvalidArgument(f"invalid filter '{k}'")
            rows = kept
    return {"Volumes": [_volume(v) for v in rows], "Warnings": []}


def inspect_volume(req: Request) -> dict[str, Any]:
    return _volume(_volumes(req).get(req.args["name"]))


def create_volume(req: Request) -> None:
    body = req.body.json()
    v = _volumes(req).create(
        body.get("Name") or "",
        body.get("Labels") or {},
        body.get("Driver") or "local",
        body.get("DriverOpts") or {},
    )
    req.send(201, json.dumps(_volume(v)).encode())


def remove_volume(req: Request) -> None:
    _volumes(req).remove(req.args["name"], req.flag("force"))
    return None


def prune_volumes(req: Request) -> dict[str, Any]:
    filters = req.filters()
    all_volumes = any(v.lower() in ("true", "1") for v in filters.get("all", []))
    gone, freed = _volumes(req).prune(all_volumes, filters.get("label", []))
    return {"VolumesDeleted": gone or None, "SpaceReclaimed": freed}
