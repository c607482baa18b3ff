from __future__ import annotations

import base64

from pallet.image.registry.auth import (
    Challenge,
    TokenCache,
    basic_header,
    parse_challenges,
    repository_scope,
)


def test_bearer_challenge_with_quoted_commas() -> None:
    header = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push"'
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/busybox:pull,push",
            },
        )
    ]


def test_basic_challenge_case_and_unquoted_params() -> None:
    (ch,) = parse_challenges('basic Realm="Registry Realm", charset=UTF-8')
    assert ch.scheme == "basic"
    assert ch.params == {"realm": "Registry Realm", "charset": "UTF-8"}


def test_several_challenges_and_escapes() -> None:
    chs = parse_challenges(
        'Basic realm="a \\"quoted\\" realm", Bearer realm="https://x/token",error="insufficient_scope"'
    )
    assert [c.scheme for c in chs] == ["basic", "bearer"]
    assert chs[0].realm == 'a "quoted" realm'
    assert chs[1].params["error"] == "insufficient_scope"


def test_empty_and_garbage_headers() -> None:
    assert parse_challenges("") == []
    assert parse_challenges("   ") == []
    assert [c.scheme for c in parse_challenges("Negotiate")] == ["negotiate"]


def test_scope_uses_the_path_without_host() -> None:
    assert repository_scope("library/busybox", "pull") == "repository:library/busybox:pull"
    assert repository_scope("a/b/c", "pull", "push") == "repository:a/b/c:pull,push"


def test_basic_header() -> None:
    assert basic_header("u", "p:w") == "Basic " + base64.b64encode(b"u:p:w").decode()


def test_token_cache_reuses_per_scope_set_until_expiry() -> None:
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    k1 = TokenCache.key("r", "s", ["repository:a:pull", "repository:b:pull"])
    assert k1 == TokenCache.key("r", "s", ["repository:b:pull", "repository:a:pull", "repository:a:pull"])
    assert cache.get(k1) is None
    cache.put(k1, "t1", 60)
    assert cache.get(k1) == "t1"
    assert cache.get(TokenCache.key("r", "s", ["repository:a:pull"])) is None  # another scope set
    now[0] += 54  # refreshed 5 s before expiry
    assert cache.get(k1) == "t1"
    now[0] += 2
    assert cache.get(k1) is None
    cache.put(k1, "t2", None)  # no expires_in: the spec's 60 s
    assert cache.get(k1) == "t2"
    cache.drop(k1)
    assert cache.get(k1) is None
