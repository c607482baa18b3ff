"""Registry verbs: pull, push, login, logout — docker's flags and output, the registry library below.

Progress goes to stdout as docker prints it: one line per layer redrawn in place on a terminal,
plain status lines otherwise, nothing but the reference with ``--quiet``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from pallet.errors import InvalidArgument


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f'invalid boolean "{value}"')


class Progress:
    """Docker's pull/push display. On a terminal each id keeps one line, rewritten in place (at most
    ten redraws a second); otherwise each id's status is printed once per change, without byte counts."""

    def __init__(self, out: IO[str], tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.lines: dict[str, str] = {}
        self.last_status: dict[str, str] = {}
        self.drawn = 0
        self.last_draw = 0.0
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self.lock:
            if self.tty:
                self.lines[event.id] = self._line(event)
                now = time.monotonic()
                if event.status not in ("Downloading", "Pushing") or now - self.last_draw > 0.1:
                    self._draw()
                    self.last_draw = now
            elif self.last_status.get(event.id) != event.status:
                self.last_status[event.id] = event.status
                self.out.write(f"{event.id}: {event.status}\n")
                self.out.flush()

    @staticmethod
    def _line(event: Any) -> str:
        if event.status in ("Downloading", "Pushing") and event.total:
            from pallet.cli.format import human_size

            width = 50
            done = min(width, event.current * width // event.total)
            bar = "=" * max(done - 1, 0) + (">" if done else "") + " " * (width - done)
            return (
                f"{event.id}: {event.status} [{bar}]  {human_size(event.current)}/{human_size(event.total)}"
            )
        return f"{event.id}: {event.status}"

    def _draw(self) -> None:
        up = f"\x1b[{self.drawn}A" if self.drawn else ""
        body = "".join(f"\x1b[2K{line}\n" for line in self.lines.values())
        self.out.write(up + body)
        self.out.flush()
        self.drawn = len(self.lines)

    def finish(self) -> None:
        with self.lock:
            if self.tty and self.lines:
                self._draw()


def _registry(ctx: Any, args: argparse.Namespace, domain: str, creds: Any = None) -> Any:
    from pallet.image.registry.client import Registry
    from pallet.image.registry.config import config_path, lookup
    from pallet.image.registry.transport import SYSTEM_CERTS_DIRS

    if creds is None:
        creds = lookup(config_path(args.config), domain)
    certs = ([Path(args.cert_dir)] if args.cert_dir else []) + [ctx.root / "certs.d", *SYSTEM_CERTS_DIRS]
    return Registry(domain, creds, certs, insecure=not args.tls_verify)


def cmd_pull(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.registry.pull import parse_platform, pull
    from pallet.oci.reference import parse, parse_tagged

    given = parse(args.name)
    ref = parse_tagged(args.name)
    platform = parse_platform(args.platform) if args.platform else None
    out = sys.stdout
    if not args.quiet:
        if given.tag is None and given.digest is None:
            out.write("Using default tag: latest\n")
        out.write(f"{ref.digest or ref.tag}: Pulling from {ref.path}\n")
        out.flush()
    progress = Progress(out, out.isatty())
    registry = _registry(ctx, args, ref.domain)
    try:
        result = pull(ctx.images, registry, ref, platform, (lambda e: None) if args.quiet else progress)
    finally:
        registry.close()
        progress.finish()
    if args.quiet:
        out.write(f"{ref}\n")
        return 0
    out.write(f"Digest: {result.digest}\n")
    status = "Downloaded newer image" if result.updated else "Image is up to date"
    out.write(f"Status: {status} for {ref.familiar()}\n{ref}\n")
    return 0


def cmd_push(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.registry.push import CHUNK_SIZE, push
    from pallet.oci.reference import parse_tagged

    ref = parse_tagged(args.name)
    image = ctx.images.get(args.name)
    out = sys.stdout
    if not args.quiet:
        out.write(f"The push refers to repository [{ref.name}]\n")
        out.flush()
    progress = Progress(out, out.isatty())
    registry = _registry(ctx, args, ref.domain)
    try:
        result = push(
            ctx.images,
            registry,
            image,
            ref,
            (lambda e: None) if args.quiet else progress,
            chunk_size=args.chunk_size or CHUNK_SIZE,
        )
    finally:
        registry.close()
        progress.finish()
    if args.quiet:
        out.write(f"{ref}\n")
    else:
        out.write(f"{result.tag}: digest: {result.digest} size: {result.size}\n")
    return 0


def _server(args: argparse.Namespace) -> tuple[str, str]:
    """(registry domain, what to print) for login/logout's SERVER argument."""
    from pallet.image.registry.config import HUB_KEY, normalize_host, server_key

    if not args.server:
        return "docker.io", HUB_KEY
    domain = normalize_host(args.server)
    if not domain:
        raise InvalidArgument(f'invalid server "{args.server}"')
    key = server_key(args.server)
    return domain, key


def cmd_login(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.registry.config import Credentials, config_path, store

    domain, shown = _server(args)
    if args.password and args.password_stdin:
        raise InvalidArgument("--password and --password-stdin are mutually exclusive")
    username = args.username
    password = args.password
    if args.password_stdin:
        if not username:
            raise InvalidArgument("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if not username or password is None:
        if not sys.stdin.isatty():
            raise InvalidArgument("cannot perform an interactive login from a non tty device")
        username = username or input("Username: ").strip()
        password = password if password is not None else getpass.getpass("Password: ")
    if not username or not password:
        raise InvalidArgument("username and password are required")
    creds = Credentials(username, password)
    registry = _registry(ctx, args, domain, creds)
    try:
        registry.login()
    finally:
        registry.close()
    store(config_path(args.config), shown, creds)
    print("Login Succeeded")
    return 0


def cmd_logout(ctx: Any, args: argparse.Namespace) -> int:
    from pallet.image.registry.config import config_path, remove

    _, shown = _server(args)
    if remove(config_path(args.config), shown):
        print(f"Removing login credentials for {shown}")
    else:
        print(f"Not logged in to {shown}")
    return 0


def _common(p: argparse.ArgumentParser, tls: bool = True) -> None:
    p.add_argument(
        "--config", metavar="DIR", help="directory of config.json (default $DOCKER_CONFIG or ~/.docker)"
    )
    if tls:
        p.add_argument(
            "--tls-verify",
            type=_bool,
            nargs="?",
            const=True,
            default=True,
            help="require https with a verified certificate (--tls-verify=false allows plain http)",
        )
        p.add_argument(
            "--cert-dir", metavar="DIR", help="a certs.d directory to look in first (HOST:PORT/*.crt)"
        )


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="download an image from a registry")
    p.set_defaults(func=cmd_pull)
    p.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    _common(p)
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")

    p = sub.add_parser("push", help="upload an image to a registry")
    p.set_defaults(func=cmd_push)
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.add_argument("--chunk-size", type=int, default=0, help=argparse.SUPPRESS)
    _common(p)
    p.add_argument("name", metavar="NAME[:TAG]")

    p = sub.add_parser("login", help="log in to a registry")
    p.set_defaults(func=cmd_login)
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true", help="take the password from stdin")
    _common(p)
    p.add_argument("server", nargs="?", metavar="SERVER")

    p = sub.add_parser("logout", help="log out from a registry")
    p.set_defaults(func=cmd_logout)
    _common(p, tls=False)
    p.add_argument("server", nargs="?", metavar="SERVER")
