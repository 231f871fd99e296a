"""Fetching `url` sources, guarded: a client must not reach the server's own network through them.

Every connection goes through `_GuardedBackend`: it resolves the host itself, refuses it unless every
address it resolves to is public (or allowed by `MediaSettings`), and connects to the address it
checked. A name that resolves to a public address when checked and to 127.0.0.1 when connected
(DNS rebinding) therefore cannot get past it. Redirects are followed here, one hop at a time, and
each hop is a new check. Only http and https, no proxy from the environment, bounded in time (the
whole fetch, redirects included), in bytes, and in redirects.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import typing
from dataclasses import dataclass

import anyio
import httpcore
import httpx

from missive.settings import MediaSettings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """The URL was refused or could not be fetched; the message says why, for the client."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None  # the response's media type, without parameters
    url: str  # after redirects


class Guard:
    """Which addresses url sources may reach: public ones, and those the settings allow."""

    def __init__(self, settings: MediaSettings) -> None:
        self.allow_all = settings.allow_private_urls
        self.hosts: set[str] = set()
        self.networks: list[Network] = []
        for entry in settings.url_allow:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    def check(self, host: str, address: Address) -> None:
        """Raise `FetchError` unless `host`, resolved to `address`, may be reached."""
        if self.allow_all or host.lower().rstrip(".") in self.hosts:
            return
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return
        kind = _non_public(address)
        if kind is not None:
            raise FetchError(
                f"the URL's host {host} resolves to {address}, a {kind} address, which is not fetched"
            )


def _non_public(address: Address) -> str | None:
    """What makes an address off limits (loopback, private, ...), or None for a public one."""
    for kind, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    ):
        if flag:
            return kind
    return None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, with each TCP connection's address checked and pinned (see the module)."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise FetchError(
                f"the URL's host {host} could not be resolved ({error.strerror or error})"
            ) from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise FetchError(f"the URL's host {host} could not be resolved")
        for address in addresses:
            self.guard.check(host, address)
        return await self.inner.connect_tcp(
            str(addresses[0]),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded backend. httpx takes no network backend, so the connection
    pool it builds is replaced by one that has it (the same pool class, as httpx 0.28 builds it)."""

    def __init__(self, guard: Guard, ssl_context: ssl.SSLContext) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=16, network_backend=_GuardedBackend(guard)
        )


class Fetcher:
    """Fetches url sources for one server; `close` at shutdown."""

    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.guard = Guard(settings)
        transport = _GuardedTransport(self.guard, httpx.create_ssl_context(trust_env=False))
        self.client = httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, headers={"user-agent": "missive"}
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def fetch(self, url: str) -> Fetched:
        """The body at `url`; raises `FetchError` with a message for the client."""
        with anyio.move_on_after(self.settings.fetch_timeout) as scope:
            return await self._follow(url)
        assert scope.cancelled_caught
        raise FetchError(f"fetching the URL took longer than {self.settings.fetch_timeout:g} seconds")

    async def _follow(self, url: str) -> Fetched:
        for _ in range(self.settings.max_redirects + 1):
            target = _parse(url)
            try:
                async with self.client.stream("GET", target) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        url = str(target.join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"the URL answered HTTP {response.status_code}")
                    data = await self._read(response)
                    media_type = (
                        response.headers.get("content-type", "").split(";")[0].strip().lower() or None
                    )
                    return Fetched(data, media_type, str(target))
            except httpx.HTTPError as error:
                raise FetchError(f"the URL could not be fetched ({type(error).__name__}: {error})") from None
        raise FetchError(f"the URL redirected more than {self.settings.max_redirects} times")

    async def _read(self, response: httpx.Response) -> bytes:
        limit = self.settings.max_url_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchError(f"the URL's content is {int(declared)} bytes, more than the {limit} allowed")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise FetchError(f"the URL's content is more than the {limit} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise FetchError(f"not a valid URL ({error})") from None
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"only http and https URLs are fetched, not {parsed.scheme or 'a relative URL'}")
    if not parsed.host:
        raise FetchError("the URL has no host")
    return parsed
