"""The registry client: pull and push images over the OCI distribution spec.

``transport`` speaks HTTP(S) to one registry (TLS with the system CA and certs.d, plain HTTP only
for localhost or insecure registries), ``auth`` answers its challenges (basic, or bearer tokens cached
per scope), ``config`` keeps credentials in docker's config.json, ``client`` maps the spec's
endpoints, and ``pull`` / ``push`` move images between a registry and the local stores.
"""
