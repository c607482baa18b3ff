"""The route table: every endpoint the service answers, and the ones it names as not implemented."""

from __future__ import annotations

from pallet.api import containers, images, networks, streams, system
from pallet.api.server import HTTPError, Request, Router


def not_implemented(what: str) -> object:
    def fn(req: Request) -> None:
        raise HTTPError(501, f"pallet does not implement {what} yet")

    return fn


def build() -> Router:
    r = Router()
    a = r.add
    # system
    a("GET", "/_ping", system.ping)
    a("HEAD", "/_ping", system.ping)
    a("GET", "/version", system.version)
    a("GET", "/info", system.info)
    a("GET", "/events", system.events)
    a("GET", "/system/df", system.df)
    # images
    a("GET", "/images/json", images.list_images)
    a("POST", "/images/create", images.create)
    a("POST", "/images/load", images.load)
    a("GET", "/images/get", images.get_many)
    a("POST", "/images/prune", images.prune)
    a("GET", "/images/search", not_implemented("image search"))  # type: ignore[arg-type]
    a("POST", "/commit", images.commit)
    a("GET", "/images/{name*}/json", images.inspect)
    a("GET", "/images/{name*}/history", images.history)
    a("GET", "/images/{name*}/get", images.get_one)
    a("POST", "/images/{name*}/tag", images.tag)
    a("POST", "/images/{name*}/push", images.push)
    a("DELETE", "/images/{name*}", images.remove)
    # containers
    a("GET", "/containers/json", containers.list_containers)
    a("POST", "/containers/create", containers.create)
    a("POST", "/containers/prune", containers.prune)
    a("GET", "/containers/{id}/json", containers.inspect)
    a("POST", "/containers/{id}/start", containers.start)
    a("POST", "/containers/{id}/stop", containers.stop)
    a("POST", "/containers/{id}/restart", containers.restart)
    a("POST", "/containers/{id}/kill", containers.kill)
    a("POST", "/containers/{id}/wait", containers.wait)
    a("DELETE", "/containers/{id}", containers.remove)
    a("POST", "/containers/{id}/rename", containers.rename)
    a("POST", "/containers/{id}/pause", containers.pause)
    a("POST", "/containers/{id}/unpause", containers.unpause)
    a("GET", "/containers/{id}/top", containers.top)
    a("GET", "/containers/{id}/stats", containers.stats)
    a("GET", "/containers/{id}/changes", containers.changes)
    a("GET", "/containers/{id}/export", containers.export)
    a("POST", "/containers/{id}/update", containers.update)
    a("GET", "/containers/{id}/archive", containers.archive_get)
    a("HEAD", "/containers/{id}/archive", containers.archive_head)
    a("PUT", "/containers/{id}/archive", containers.archive_put)
    a("GET", "/containers/{id}/logs", streams.logs)
    a("POST", "/containers/{id}/attach", streams.attach)
    a("POST", "/containers/{id}/resize", streams.resize)
    a("POST", "/containers/{id}/exec", streams.exec_create)
    a("POST", "/exec/{id}/start", streams.exec_start)
    a("POST", "/exec/{id}/resize", streams.exec_resize)
    a("GET", "/exec/{id}/json", streams.exec_inspect)
    # networks and volumes
    a("GET", "/networks", networks.list_networks)
    a("POST", "/networks/create", networks.create_network)
    a("POST", "/networks/prune", networks.prune_networks)
    a("GET", "/networks/{id}", networks.inspect_network)
    a("DELETE", "/networks/{id}", networks.remove_network)
    a("POST", "/networks/{id}/connect", networks.connect)
    a("POST", "/networks/{id}/disconnect", networks.disconnect)
    a("GET", "/volumes", networks.list_volumes)
    a("POST", "/volumes/create", networks.create_volume)
    a("POST", "/volumes/prune", networks.prune_volumes)
    a("GET", "/volumes/{name}", networks.inspect_volume)
    a("DELETE", "/volumes/{name}", networks.remove_volume)
    for path in ("/build", "/swarm", "/nodes", "/services", "/secrets", "/configs", "/plugins", "/session"):
        a("GET", path, not_implemented(path))  # type: ignore[arg-type]
        a("POST", path, not_implemented(path))  # type: ignore[arg-type]
    return r
