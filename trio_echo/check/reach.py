"""Reaching the server a check is about: name resolution, TCP (with a PROXY header, as a
balancer would send), TLS over it, and the diagnoses of a connection that fails (refused,
filtered, a server on this machine that listens on loopback only, a port that speaks TLS)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Final

import trio

from trio_echo import client, tls
from trio_echo.check.probes import ProbeFailed, resolve
from trio_echo.events import format_address
from trio_echo.i18n import _

DEFAULT_TIMEOUT: Final = 5.0


@dataclass
class Target:
    """A server to check, and how to reach it; each probe opens its own connection."""

    host: str
    port: int
    timeout: float = DEFAULT_TIMEOUT
    address: tuple[str, int] | None = None
    tls_settings: tls.ClientTls | None = None  # with --tls
    send_proxy: str | None = None  # "v1" or "v2": a PROXY header first, as a balancer would
    proxy_source: tuple[str, int] | None = None
    websocket: str | None = None  # with --websocket: the path to upgrade at

    @property
    def where(self) -> str:
        return format_address(self.host, self.port)

    # ---- connection ----------------------------------------------------------------------

    async def resolve(self) -> str:
        _name, self.address, addresses = await resolve(
            self.host, self.port, socket.SOCK_STREAM, self.timeout
        )
        return addresses

    async def connect(self) -> trio.abc.Stream:
        """A connection for a probe: TCP, TLS over it with --tls, a WebSocket with
        --websocket."""
        tcp = await self.connect_tcp()
        stream: trio.abc.Stream = tcp
        if self.tls_settings is not None:
            stream, _seen = await self.secure(tcp)
        if self.websocket is None:
            return stream
        return await self.upgrade(stream)

    async def upgrade(self, stream: trio.abc.Stream) -> trio.abc.Stream:
        """The WebSocket over a connection, or `ProbeFailed` saying why not."""
        from trio_echo.rendering import say
        from trio_echo.websocket_client import WebSocketRefused, open_websocket

        assert self.websocket is not None
        try:
            with trio.fail_after(self.timeout):
                return await open_websocket(stream, self.host, self.websocket, lines=False)
        except trio.TooSlowError:
            await stream.aclose()
            raise ProbeFailed(
                _("no answer to the WebSocket upgrade within {timeout:g} s").format(
                    timeout=self.timeout
                )
            ) from None
        except WebSocketRefused as refused:
            await stream.aclose()
            raise ProbeFailed(say(refused.words)) from None

    async def secure(
        self, stream: trio.SocketStream
    ) -> tuple[trio.SSLStream[tls.LingeringTransport], tls.ServerCertificate]:
        assert self.tls_settings is not None
        try:
            with trio.fail_after(self.timeout):
                return await client.secure(stream, self.tls_settings, self.host, self.port)
        except trio.TooSlowError:
            await stream.aclose()
            raise ProbeFailed(
                _(
                    "no TLS handshake within {timeout:g} s: the server does not answer TLS "
                    "({drop_tls})"
                ).format(timeout=self.timeout, drop_tls=_(tls.DROP_TLS))
            ) from None
        except tls.TlsFailed as failed:
            await stream.aclose()
            raise ProbeFailed(str(failed)) from None

    async def connect_tcp(self) -> trio.SocketStream:
        try:
            with trio.fail_after(self.timeout):
                stream = await client.connect(self.host, self.port)
                if self.send_proxy:
                    await client.send_proxy_header(stream, self.send_proxy, self.proxy_source)
                return stream
        except trio.TooSlowError:
            timed_out = client.timed_out(self.host, self.port, self.timeout)
            raise ProbeFailed(str(timed_out), cause="filtered") from None
        except client.ConnectFailed as failed:
            if failed.kind == "refused":
                diagnosis = await self._refused_diagnosis(str(failed))
                raise ProbeFailed(diagnosis, cause="refused") from None
            raise ProbeFailed(str(failed), cause=failed.kind) from None

    async def _refused_diagnosis(self, message: str) -> str:
        if self.address is not None and await self._loopback_only_here():
            message += _(
                ". A server on this machine listens on 127.0.0.1:{port} only: start it with "
                "--host 0.0.0.0 (or ::) to accept other machines"
            ).format(port=self.port)
        return message

    async def _loopback_only_here(self) -> bool:
        """Whether the target is one of this machine's own addresses and a server listens
        on the same port on loopback: then it was started for local clients only."""
        assert self.address is not None
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        if self.address[0].startswith("127.") or self.address[0] == "::1":
            return False
        with trio.socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                await probe.bind((self.address[0], 0))
            except OSError:
                return False  # not an address of this machine
        loopback = "127.0.0.1" if family == socket.AF_INET else "::1"
        with trio.move_on_after(self.timeout) as scope:
            try:
                stream = await trio.open_tcp_stream(loopback, self.port)
            except OSError:
                return False
            await stream.aclose()
        return not scope.cancelled_caught

    async def speaks_tls(self) -> str | None:
        """If the port answers a TLS handshake, a diagnosis that says so; else None."""
        settings = tls.client_tls(insecure=True)
        stream = await self.connect_tcp()
        with trio.move_on_after(self.timeout):
            try:
                secured, seen = await tls.client_handshake(
                    tls.LingeringTransport(stream, 0), settings, self.host
                )
            except tls.TlsFailed:
                await stream.aclose()
                return None
            version = secured.version()
            await trio.aclose_forcefully(secured)
            return _(
                "this port speaks TLS ({version}; its certificate: {subject}, issued "
                "by {issuer}): check it with --tls (add --tls-fingerprint "
                "{fingerprint} to trust this very certificate)"
            ).format(
                version=version,
                subject=seen.subject,
                issuer=seen.issuer,
                fingerprint=seen.fingerprint,
            )
        await stream.aclose()
        return None
