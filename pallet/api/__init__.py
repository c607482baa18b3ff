"""``pallet system service``: the Docker Engine API over a unix socket, served by the same engine as the
CLI. A front end: it parses HTTP, calls the engine and serialises docker's JSON; no logic of its own."""
