"""TLS for the echo: certificates, contexts, the handshake layer, and plain words for failures.

A TLS connection is a layer between the accepted TCP stream and the echo loop: the server
hands the echo loop a `ServerTlsStream` once `server_handshake` has succeeded, and the loop
moves plaintext through it as it does through a socket. What TLS adds lives here:

- the certificate: files given by the user, or an ephemeral self-signed one made at start
  (with `cryptography`, imported only then, so that plain TCP starts no slower);
- the server's handshake, over `ServerTlsStream` (tls_stream.py), and the client's, over
  trio's `SSLStream` on a `LingeringTransport`. TLS has no half-close (`SSLStream` has no
  `send_eof`, and OpenSSL refuses data that arrives after it sent `close_notify`), so the
  polite close happens one layer down on both sides: after our `close_notify`, TCP sends its
  FIN and reads what the peer still sends until the peer's FIN or a deadline. Closing with
  unread bytes would make the kernel answer with a RST, which can destroy the echo in flight;
- `explain_*`: what an OpenSSL error means, in words a person can act on.
"""

from __future__ import annotations

import contextvars
import datetime
import hashlib
import hmac
import ipaddress
import os
import re
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, final

import trio

from trio_echo.cli import DEFAULT_HANDSHAKE_TIMEOUT
from trio_echo.events import Words, escaped, preview, says
from trio_echo.i18n import N_, _
from trio_echo.rendering import say
from trio_echo.tls_stream import HEAD_BYTES, ServerTlsStream

if TYPE_CHECKING:
    from cryptography import x509

MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2
EPHEMERAL_DAYS: Final = 30  # long enough that a check does not warn of its expiry (14 days)
_FINGERPRINT: Final = re.compile(r"sha256:[0-9a-f]{64}")

Trust = Literal["ca", "fingerprint", "insecure"]


class TlsFailed(Exception):
    """A TLS handshake or verification that failed. `words` say why: the server's handshake
    failures go into its `disconnected` event as they are; `str()` says it in the reader's
    language. The failures found at start (certificate files) come worded already."""

    def __init__(self, why: Words | str) -> None:
        super().__init__(why)
        self.words = why if isinstance(why, Words) else says("message", "{message}", message=why)

    def __str__(self) -> str:
        return say(self.words)


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as `sha256:` and 64 lowercase hex digits."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """`sha256:HEX` as people paste it (colons, upper case) in our one spelling."""
    value = text.strip().lower()
    algorithm, _colon, digits = value.partition(":")
    value = f"{algorithm}:{digits.replace(':', '')}"
    if not _FINGERPRINT.fullmatch(value):
        raise ValueError(
            _("{text!r} is not a fingerprint of the form sha256: and 64 hex digits").format(
                text=text
            )
        )
    return value


# ---- certificates --------------------------------------------------------------------------


def ephemeral_certificate(names: Sequence[str]) -> tuple[bytes, bytes]:
    """A fresh self-signed certificate and its key (PEM) for `names` (host names and IPs)."""
    # Imported here: only a server started with --tls and no certificate pays for it.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # milliseconds, where RSA takes 100
    alternatives: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=EPHEMERAL_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def ephemeral_names(host: str) -> list[str]:
    """What an ephemeral certificate is for: this machine's names for itself, and `host`."""
    names = ["localhost", socket.gethostname(), "127.0.0.1", "::1"]
    if host not in ("0.0.0.0", "::", ""):
        names.insert(1, host)
    return names


def write_private(directory: str, name: str, data: bytes) -> str:
    """A file only its owner can read (keys), in `directory`; its path."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return path


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        raise TlsFailed(_("cannot read {path}: no such file").format(path=path)) from None
    except OSError as exc:
        raise TlsFailed(
            _("cannot read {path}: {value}").format(path=path, value=exc.strerror or exc)
        ) from None


def first_certificate_der(cert_file: str, text: str | None = None) -> bytes:
    """The DER of the first certificate in a PEM file (the server's own, by convention);
    `text`: the file's contents, if already read."""
    found = re.search(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
        _read_text(cert_file) if text is None else text,
        flags=re.DOTALL,
    )
    if found is None:
        raise TlsFailed(
            _("{cert_file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)").format(
                cert_file=cert_file
            )
        )
    return ssl.PEM_cert_to_DER_cert(found.group(0))


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> bytes:
    """Load a certificate chain and its key; the DER of the certificate. Each file is read
    once (`<(...)`, a pipe, can be read only once) and loaded from a private copy; an
    encrypted key is refused, never asked for on the terminal."""
    cert_text = _read_text(cert_file)
    der = first_certificate_der(cert_file, cert_text)
    key_text = None if key_file is None else _read_text(key_file)
    if re.search(r"ENCRYPTED PRIVATE KEY|Proc-Type: 4,ENCRYPTED", key_text or cert_text):
        raise TlsFailed(
            _(
                "cannot use {key_file}: its key is encrypted (it has a pass phrase), and a "
                "server has no one to ask for it: give the key unencrypted (openssl pkey -in "
                "KEY -out PLAIN.pem)"
            ).format(key_file=key_file or cert_file)
        )
    try:
        with tempfile.TemporaryDirectory(prefix="trio-echo-tls-") as directory:
            cert_copy = write_private(directory, "cert.pem", cert_text.encode("ascii"))
            key_copy = None
            if key_text is not None:
                key_copy = write_private(directory, "key.pem", key_text.encode("ascii"))
            context.load_cert_chain(cert_copy, key_copy, password=_no_pass_phrase)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            why = _("the key does not belong to the certificate")
        elif key_file is None:
            why = _("the file holds no unencrypted PEM key (give it with --tls-key)")
        else:
            why = _("{key_file} must be its unencrypted PEM key").format(key_file=key_file)
        raise TlsFailed(
            _("cannot use {cert_file} as a certificate: {why}").format(cert_file=cert_file, why=why)
        ) from None
    return der


def _no_pass_phrase() -> bytes:
    return b""  # instead of OpenSSL's prompt on the terminal (which hangs under a pty)


def _load_ca(context: ssl.SSLContext, ca_file: str) -> None:
    _read_text(ca_file)
    try:
        context.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        why = _("it must hold PEM certificates ({error})").format(error=exc)
        raise TlsFailed(
            _("cannot use {ca_file} as a CA: {why}").format(ca_file=ca_file, why=why)
        ) from None


@dataclass(frozen=True)
class ServerTls:
    """What the server needs for TLS: its context, and what to tell people about it."""

    context: ssl.SSLContext
    fingerprint: str
    certificate: str  # where it came from: a file's path, or "ephemeral self-signed"
    client_ca: str | None = None
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


_sni: contextvars.ContextVar[list[str]] = contextvars.ContextVar("trio_echo_sni")


def _remember_sni(_obj: object, name: str | None, _ctx: ssl.SSLContext) -> None:
    # Called by OpenSSL inside the handshake, in the connection's own task (and context).
    holder = _sni.get(None)
    if holder is not None and name:
        holder.append(escaped(name))  # ASCII, but control bytes are ASCII too


def quieting_bad_server_names(
    previous: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], object]:
    """A `sys.unraisablehook` for a TLS server, in front of `previous`. A server name (SNI)
    that is not ASCII fails in CPython before our callback is called, and CPython writes the
    traceback to stderr itself: past the event log (a client could fill a pipe nobody reads
    and freeze the server) and into the JSON lines. The handshake fails all the same
    (OpenSSL's CALLBACK_FAILED) and the `server.disconnected` event says why; anything else
    goes to `previous`."""

    def hook(unraisable: sys.UnraisableHookArgs) -> object:
        if isinstance(unraisable.exc_value, UnicodeDecodeError) and isinstance(
            unraisable.object, bytes
        ):
            return None
        return previous(unraisable)

    return hook


def server_tls(
    *,
    cert_file: str | None = None,
    key_file: str | None = None,
    client_ca: str | None = None,
    host: str = "localhost",
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> ServerTls:
    """The server's TLS settings from files, or with an ephemeral certificate for `host`.

    Raises `TlsFailed` with a one-line reason for files that cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION  # ServerTlsStream relies on it
    context.sni_callback = _remember_sni
    if cert_file is None:
        cert_pem, key_pem = ephemeral_certificate(ephemeral_names(host))
        with tempfile.TemporaryDirectory(prefix="trio-echo-tls-") as directory:
            der = _load_chain(
                context,
                write_private(directory, "cert.pem", cert_pem),
                write_private(directory, "key.pem", key_pem),
            )
        source = "ephemeral self-signed"
    else:
        der = _load_chain(context, cert_file, key_file)
        source = cert_file
    if client_ca is not None:
        _load_ca(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return ServerTls(context, fingerprint(der), source, client_ca, handshake_timeout)


# ---- the transport under TLS ---------------------------------------------------------------


@final
class LingeringTransport(trio.abc.HalfCloseableStream):
    """A TCP stream for a client's `SSLStream` that closes without a RST and keeps the
    server's first bytes (to explain a failed handshake).

    `aclose` half-closes, then discards what the peer still sends until it closes too (or
    `linger` seconds pass, or the close is cancelled: `aclose_forcefully` stays forceful).
    """

    def __init__(self, stream: trio.abc.HalfCloseableStream, linger: float) -> None:
        self.stream = stream
        self.head = b""
        self._linger = linger

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.stream.receive_some(max_bytes)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        try:
            with trio.move_on_after(self._linger):
                await self.stream.send_eof()
                while await self.stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(self.stream)


def peer_certificate(stream: trio.SSLStream[LingeringTransport]) -> bytes | None:
    """The DER certificate the peer presented, if any (after the handshake)."""
    der = stream.getpeercert(binary_form=True)
    return der or None


def subject_text(der: bytes) -> str:
    """A certificate's subject as `CN=...,O=...` (RFC 4514), escaped: the peer chose it."""
    return escaped(_x509(der).subject.rfc4514_string())


def load_x509_support() -> None:
    """Import what reading certificates needs now, so that it is not timed as a handshake."""
    import cryptography.x509  # noqa: F401


def _x509(der: bytes) -> x509.Certificate:
    from cryptography import x509

    return x509.load_der_x509_certificate(der)


# ---- the server's handshake ----------------------------------------------------------------


@dataclass(frozen=True)
class Established:
    version: str
    cipher: str
    sni: str | None
    client_cert: str | None


async def server_handshake(
    transport: trio.abc.HalfCloseableStream, tls: ServerTls, idle: float | None = None
) -> tuple[ServerTlsStream, Established]:
    """The TLS handshake as the server, within its timeout, or `idle` (the idle timeout) if
    that is shorter; raises `TlsFailed` saying what went wrong."""
    seconds, option = tls.handshake_timeout, "--tls-handshake-timeout"
    if idle is not None and idle < seconds:
        seconds, option = idle, "--idle-timeout"
    stream = ServerTlsStream(transport, tls.context)
    sni: list[str] = []
    _sni.set(sni)
    with trio.move_on_after(seconds) as waited:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            raise TlsFailed(explain_server_failure(exc, stream.head)) from None
    if waited.cancelled_caught:
        raise TlsFailed(_late(seconds, option, stream.head))
    der = stream.peer_certificate()
    cipher = stream.cipher()
    return stream, Established(
        version=str(stream.version()),
        cipher=cipher[0] if cipher else "",
        sni=sni[0] if sni else None,
        client_cert=subject_text(der) if der else None,
    )


def _late(seconds: float, option: str, head: bytes) -> Words:
    if not head:
        return says(
            "handshake_timeout",
            N_("no TLS handshake within {seconds:g} s ({option}): the client sent nothing"),
            seconds=seconds,
            option=option,
        )
    return says(
        "handshake_timeout",
        N_(
            "no TLS handshake within {seconds:g} s ({option}): the client sent only {len} "
            "bytes, {quoted}"
        ),
        seconds=seconds,
        option=option,
        len=len(head),
        quoted=_quoted(head),
    )


def _quoted(head: bytes) -> str:
    return '"' + preview(head) + '"'


def looks_like_tls(head: bytes) -> bool:
    """Whether bytes can begin a TLS handshake record (type 22, version 3.x)."""
    return head[:1] == b"\x16" and (len(head) < 2 or head[1] == 3)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLError):
        return str(cause.reason or "")
    return ""


# What an OpenSSL reason means on the server's side, when the client's bytes were TLS.
_SERVER_REASONS: Final[dict[str, str]] = {
    "TLSV1_ALERT_UNKNOWN_CA": N_(
        "the client refused our certificate: it does not trust the CA that signed it "
        "(give the client that CA, or pin the certificate's fingerprint)"
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": N_("the client refused our certificate (bad certificate)"),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": N_(
        "the client refused our certificate (it cannot verify it: an unknown CA, a "
        "self-signed certificate, or a name the certificate is not for)"
    ),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": N_("the client refused our certificate: it has expired"),
    "UNSUPPORTED_PROTOCOL": N_(
        "no TLS version in common: the client offers only versions below TLS 1.2, "
        "which this server refuses"
    ),
    "TLSV1_ALERT_PROTOCOL_VERSION": N_("no TLS version in common with the client"),
    "NO_SHARED_CIPHER": N_("no cipher in common with the client"),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": N_(
        "the client gave up the handshake: no version or cipher in common, or it did not "
        "accept our certificate"
    ),
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": N_(
        "the client sent no certificate, and this server requires one (--tls-client-ca)"
    ),
    "CERTIFICATE_VERIFY_FAILED": N_(
        "the client's certificate is not signed by the CA this server trusts (--tls-client-ca)"
    ),
    "TLSV1_ALERT_DECRYPT_ERROR": N_("the client's handshake did not verify (decrypt error)"),
    # Our one callback is the server name's: it fails for a name that is not ASCII.
    "CALLBACK_FAILED": N_(
        "the client sent a server name (SNI) that is not ASCII, so not a name of this server"
    ),
}


def explain_server_failure(exc: BaseException, head: bytes) -> Words:
    """Why a server-side handshake failed, given the first bytes the client sent. The code
    is OpenSSL's reason where it names the trouble (TLSV1_ALERT_UNKNOWN_CA...)."""
    if not head:
        return says(
            "closed_before_handshake",
            N_("the client closed the connection before starting a TLS handshake"),
        )
    if not looks_like_tls(head):
        if re.match(rb"[A-Z]{3,7} \S* HTTP/", head):
            what = says("http", N_("a plain HTTP request"))
        else:
            what = says("other", N_("plain text or another protocol"))
        return says(
            "not_tls",
            N_("the client spoke {what}, not TLS: {quoted} is not a TLS ClientHello "
               "(connect with a TLS client, e.g. trio-echo-client --tls)"),
            what=what, quoted=_quoted(head),
        )  # fmt: skip
    reason = _reason(exc)
    if reason in _SERVER_REASONS:
        return says(reason, _SERVER_REASONS[reason])
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLEOFError) or "EOF" in reason:
        return says(
            "closed_in_handshake",
            N_("the client closed the connection in the middle of the TLS handshake"),
        )
    if not isinstance(cause, ssl.SSLError):  # a reset, or the socket's own error
        return says(
            "reset_in_handshake",
            N_("the client closed or reset the connection in the middle of the TLS handshake"),
        )
    return says(
        "handshake_error",
        N_("the client's bytes are not a TLS handshake we can complete ({error})"),
        error=describe_ssl(cause),
    )


def describe_ssl(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


# ---- the client's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTls:
    """How the client secures and trusts its connection."""

    context: ssl.SSLContext
    trust: Trust
    server_name: str | None = None
    pinned: str | None = None


def client_tls(
    *,
    ca_file: str | None = None,
    pinned: str | None = None,
    insecure: bool = False,
    server_name: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ClientTls:
    """The client's context: verification against the system's CAs and the name by default
    (as curl does); `ca_file` trusts that CA instead; `pinned` trusts one certificate by its
    fingerprint and nothing else; `insecure` checks nothing."""
    trust: Trust
    if pinned is not None or insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        trust = "fingerprint" if pinned is not None else "insecure"
    else:
        context = ssl.create_default_context()
        if ca_file is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            _load_ca(context, ca_file)
        trust = "ca"
    context.minimum_version = MINIMUM_VERSION
    if cert_file is not None:
        _load_chain(context, cert_file, key_file)
    return ClientTls(context, trust, server_name, pinned)


@dataclass(frozen=True)
class ServerCertificate:
    """What the client saw of the server's certificate, for its event and its diagnoses."""

    subject: str
    issuer: str
    not_before: str
    not_after: str
    names: tuple[str, ...]
    fingerprint: str

    @classmethod
    def from_der(cls, der: bytes) -> ServerCertificate:
        from cryptography import x509

        cert = _x509(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(escaped(str(name.value)) for name in san)
        except x509.ExtensionNotFound:
            names = ()
        return cls(  # every string escaped: a server chooses them, to be printed by us
            subject=escaped(cert.subject.rfc4514_string()),
            issuer=escaped(cert.issuer.rfc4514_string()),
            not_before=cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
            not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
            names=names,
            fingerprint=fingerprint(der),
        )

    def days_left(self, now: datetime.datetime | None = None) -> float:
        expires = datetime.datetime.strptime(self.not_after, "%Y-%m-%d %H:%M:%S UTC")
        expires = expires.replace(tzinfo=datetime.UTC)
        now = now or datetime.datetime.now(datetime.UTC)
        return (expires - now).total_seconds() / 86400

    def describe(self) -> str:
        names = ", ".join(self.names) or "none"
        return _(
            "it presented {value}, issued by {issuer}, valid {not_before} to "
            "{not_after}, for names {names}, fingerprint {fingerprint}"
        ).format(
            value=self.subject or "(no subject)",
            issuer=self.issuer,
            not_before=self.not_before,
            not_after=self.not_after,
            names=names,
            fingerprint=self.fingerprint,
        )


async def client_handshake(
    transport: LingeringTransport, tls: ClientTls, host: str
) -> tuple[trio.SSLStream[LingeringTransport], ServerCertificate]:
    """The TLS handshake as the client, and the pin check; `TlsFailed` if either fails.

    A verification failure is explained by the caller (`explain_verification`), which may
    look at the certificate over a second connection."""
    name = tls.server_name or host
    stream = trio.SSLStream(transport, tls.context, server_hostname=name)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        raise TlsFailed(explain_client_failure(exc, transport.head)) from exc
    der = peer_certificate(stream)
    if der is None:
        await trio.aclose_forcefully(stream)
        raise TlsFailed(_("the server presented no certificate"))
    seen = ServerCertificate.from_der(der)
    if tls.pinned is not None and not hmac.compare_digest(seen.fingerprint, tls.pinned):
        await trio.aclose_forcefully(stream)
        raise TlsFailed(
            _(
                "the server's certificate is not the pinned one (--tls-fingerprint "
                "{pinned}): {error}. If it changed on purpose, pin the new one: "
                "--tls-fingerprint {fingerprint}"
            ).format(pinned=tls.pinned, error=seen.describe(), fingerprint=seen.fingerprint)
        )
    return stream, seen


_CLIENT_REASONS: Final[dict[str, str]] = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": N_(
        "the server requires a client certificate: pass --tls-cert and --tls-key"
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": N_(
        "the server refused our client certificate (or requires one: --tls-cert, --tls-key)"
    ),
    "TLSV1_ALERT_UNKNOWN_CA": N_(
        "the server refused our client certificate: it does not trust the CA that signed it"
    ),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": N_("the server refused our client certificate"),
    "TLSV1_ALERT_PROTOCOL_VERSION": N_("no TLS version in common with the server"),
    "UNSUPPORTED_PROTOCOL": N_("no TLS version in common with the server"),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": N_(
        "the server gave up the handshake: no version or cipher in common, or it requires "
        "a client certificate (--tls-cert, --tls-key)"
    ),
    "NO_CIPHERS_AVAILABLE": N_("no cipher in common with the server"),
}

# OpenSSL's words for "what came back is not TLS".
_NOT_TLS: Final = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "UNEXPECTED_MESSAGE",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "RECORD_LENGTH_MISMATCH",
    }
)
DROP_TLS: Final = N_("is this a plain TCP port? drop --tls")


def explain_client_failure(exc: BaseException, head: bytes) -> str:
    """Why a client-side handshake (or the first read after it) failed."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    reason = _reason(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return _("the server's certificate is not trusted: {verify_message}").format(
            verify_message=cause.verify_message
        )
    if reason in _CLIENT_REASONS:
        return _(_CLIENT_REASONS[reason])
    if head.startswith(b"\x16\x03") and head[5:6] == b"\x01":
        return _("the server sent our own TLS ClientHello back: it is a plain echo, not TLS; ") + _(
            DROP_TLS
        )
    if reason in _NOT_TLS or (head and not head.startswith((b"\x16\x03", b"\x15\x03"))):
        said = _(" (it sent {quoted})").format(quoted=_quoted(head)) if head else ""
        return _("the server did not answer with TLS{said}: {drop_tls}").format(
            said=said, drop_tls=_(DROP_TLS)
        )
    if not head:
        return _(
            "the server closed the connection during the TLS handshake without a "
            "word: it may not speak TLS ({drop_tls}), or it refused us"
        ).format(drop_tls=_(DROP_TLS))
    return _("the TLS handshake failed: {error}").format(error=describe_ssl(cause))


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def explain_session_failure(exc: BaseException, received: int) -> Words | None:
    """A TLS error met after the handshake, in words; None if the error was not TLS.

    TLS 1.3 settles client certificates after the client has finished its handshake, so a
    refusal shows on the first read: as an alert, or (from a server that closes without one,
    as trio's does) as a close without close_notify before any byte came back."""
    causes = [leaf.__cause__ for leaf in _leaves(exc) if isinstance(leaf.__cause__, ssl.SSLError)]
    if not causes:
        return None
    cause = causes[0]  # both directions may meet the same error at once
    if isinstance(cause, ssl.SSLEOFError):
        if received:
            return says(
                "truncated",
                N_("the server closed the connection without a TLS close_notify (truncated)"),
            )
        return says(
            "closed_after_handshake",
            N_("the server closed the connection right after the handshake, without a TLS "
               "close_notify: does it require a client certificate? (--tls-cert, --tls-key)"),
        )  # fmt: skip
    reason = str(cause.reason)
    if reason in _CLIENT_REASONS:
        return says(reason, _CLIENT_REASONS[reason])
    return says("tls_error", N_("TLS error: {error}"), error=describe_ssl(cause))


async def fetch_certificate(transport: LingeringTransport, host: str) -> bytes | None:
    """The certificate a server presents, fetched without verifying it (to say what was
    seen when verification failed); None if it could not be had."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stream = trio.SSLStream(transport, context, server_hostname=host)
    try:
        await stream.do_handshake()
        return peer_certificate(stream)
    except trio.BrokenResourceError:
        return None
    finally:
        await trio.aclose_forcefully(stream)


def explain_verification(failure: str, seen: ServerCertificate | None, name: str) -> str:
    """A verification failure with what the server presented and the flags that would
    trust it."""
    if seen is None:
        return failure
    hint = _(
        "to trust this certificate, pass --tls-fingerprint {fingerprint} (or --tls-ca with the "
        "CA that signed it)"
    ).format(fingerprint=seen.fingerprint)
    if "mismatch" in failure.lower():
        hint = _(
            "it is not for the name {name!r}: connect by one of its names, or pass "
            "--tls-server-name NAME; or {hint}"
        ).format(name=name, hint=hint)
    return f"{failure}; {seen.describe()}; {hint}"
