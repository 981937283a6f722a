"""The web configuration file of Prometheus's own exporters (exporter-toolkit's
``--web.config.file``): TLS, basic authentication, response headers, a rate limit.

The same YAML shape, so operators reuse the file they have::

    tls_server_config:
      cert_file: server.crt          # or cert: / key: inline PEM
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    http_server_config:
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      alice: $2y$10$...                # bcrypt
    rate_limit: {interval: 1s, burst: 20}

Unknown keys are errors, as in exporter-toolkit (its YAML is read strictly).
What Python's ``ssl`` module cannot do is refused with a line saying so, never
silently ignored: ``client_auth_type`` RequestClientCert and RequireAnyClientCert
(a client certificate that is not verified) and ``curve_preferences``. HTTP/2 is
not served (``http2`` is accepted; clients use HTTP/1.1).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sockscope.errors import SockscopeError

_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
_TLS_KEYS = {"cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
             "client_allowed_sans", "min_version", "max_version", "cipher_suites",
             "prefer_server_cipher_suites", "curve_preferences"}
_HTTP_KEYS = {"http2", "headers"}
_HEADERS = {"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
            "Strict-Transport-Security"}
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# Go's names of the TLS 1.2 cipher suites -> OpenSSL's (TLS 1.3 suites are not configurable, as in Go).
_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class WebConfigError(SockscopeError):
    """The web configuration file is wrong (exit status 1: the file, not the command line)."""


@dataclass(slots=True)
class RateLimit:
    """A token bucket: one request per ``interval`` seconds, bursts of ``burst``."""

    interval: float
    burst: int
    _tokens: float = 0.0
    _stamp: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) / self.interval)
            self._stamp = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


@dataclass(slots=True)
class WebConfig:
    """A parsed web configuration. ``ssl_context`` is None without TLS."""

    ssl_context: ssl.SSLContext | None = None
    allowed_sans: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict)
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    rate_limit: RateLimit | None = None
    _verified: dict[tuple[str, bytes, bytes], bool] = field(default_factory=dict)

    def authorized(self, header: str | None) -> bool:
        """Does this Authorization header name a user with the right password?
        (Always, when no users are configured.) A successful check is cached, as
        exporter-toolkit does, since bcrypt costs tens of milliseconds."""
        if not self.users:
            return True
        if not header or not header[:6].lower() == "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        import bcrypt

        hashed = self.users.get(user)
        secret = password.encode()
        key = (user, hashlib.sha256(secret).digest(), hashed or b"")
        known = self._verified.get(key)
        if known is not None:
            return known
        if hashed is None:
            # Spend the same time as for a known user, so timing does not tell
            # which user names exist.
            bcrypt.checkpw(secret, _dummy_hash())
            return False
        ok = bcrypt.checkpw(secret, hashed)
        if ok:
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified[key] = True
        return ok

    def sans_allowed(self, cert: dict[str, Any] | None) -> bool:
        if not self.allowed_sans:
            return True
        if not cert:
            return False
        names = {str(value) for _kind, value in cert.get("subjectAltName", ())}
        return bool(names & self.allowed_sans)


_dummy: list[bytes] = []


def _dummy_hash() -> bytes:
    """A bcrypt hash (cost 10) of a random password, made once: what an unknown
    user's password is checked against."""
    if not _dummy:
        import bcrypt

        _dummy.append(bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(10)))
    return _dummy[0]


def load(path: str) -> WebConfig:
    """Read and check the file; any problem is a WebConfigError naming it."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise WebConfigError(f"web config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WebConfigError(f"web config {path}: not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise WebConfigError(f"web config {path}: {problem}{at}") from None
    try:
        return parse(data, os.path.dirname(os.path.abspath(path)))
    except WebConfigError as exc:
        raise WebConfigError(f"web config {path}: {exc}") from None


def parse(data: object, base: str = ".") -> WebConfig:
    """A WebConfig from the YAML document's data; relative file names are read
    from ``base`` (the file's directory, as exporter-toolkit does)."""
    if data is None:
        return WebConfig()
    top = _mapping(data, "the file", _TOP_KEYS)
    config = WebConfig()
    tls = top.get("tls_server_config")
    if tls is not None:
        config.ssl_context, config.allowed_sans = _tls(_mapping(tls, "tls_server_config", _TLS_KEYS), base)
    http = top.get("http_server_config")
    if http is not None:
        http_map = _mapping(http, "http_server_config", _HTTP_KEYS)
        if "http2" in http_map and not isinstance(http_map["http2"], bool):
            raise WebConfigError("http_server_config.http2: expected true or false")
        headers = http_map.get("headers") or {}
        for name, value in _mapping(headers, "http_server_config.headers", _HEADERS).items():
            config.headers[name] = _string(value, f"headers.{name}")
        _check_headers(config.headers)
    users = top.get("basic_auth_users")
    if users is not None:
        for user, hashed in _mapping(users, "basic_auth_users", None).items():
            config.users[str(user)] = _bcrypt_hash(hashed, str(user))
    limit = top.get("rate_limit")
    if limit is not None:
        limit_map = _mapping(limit, "rate_limit", {"interval", "burst"})
        interval = duration(limit_map.get("interval", "0s"), "rate_limit.interval")
        burst = limit_map.get("burst", 0)
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
            raise WebConfigError("rate_limit.burst: expected a whole number >= 0")
        if interval > 0:
            if burst < 1:
                raise WebConfigError("rate_limit.burst: must be at least 1 with an interval")
            config.rate_limit = RateLimit(interval, burst)
    return config


def duration(value: object, what: str) -> float:
    """A Go duration ("1s", "500ms", "1m30s") in seconds."""
    text = _string(value, what).strip()
    if text == "0":
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise WebConfigError(f"{what}: {text!r} is not a duration (e.g. 1s, 500ms)")
    return total


def _tls(tls: dict[str, Any], base: str) -> tuple[ssl.SSLContext, frozenset[str]]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert = _pem_or_file(tls, "cert", "cert_file", base)
    key = _pem_or_file(tls, "key", "key_file", base)
    if cert is None or key is None:
        raise WebConfigError("tls_server_config: needs cert_file and key_file (or cert and key)")
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise WebConfigError(f"tls_server_config: cannot load the certificate and key: "
                             f"{getattr(exc, 'reason', None) or exc.strerror or exc}") from None
    finally:
        _forget_memfds(cert, key)
    auth = _string(tls.get("client_auth_type", "NoClientCert"), "client_auth_type")
    if auth in ("RequestClientCert", "RequireAnyClientCert"):
        raise WebConfigError(f"client_auth_type {auth} is not supported (Python's ssl verifies every "
                             "client certificate it takes): use VerifyClientCertIfGiven or "
                             "RequireAndVerifyClientCert")
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(f"client_auth_type: unknown {auth!r} (expected one of: "
                             f"{', '.join([*_CLIENT_AUTH, 'RequestClientCert', 'RequireAnyClientCert'])})")
    ctx.verify_mode = _CLIENT_AUTH[auth]
    ca = _pem_or_file(tls, "client_ca", "client_ca_file", base)
    if ca is not None:
        try:
            ctx.load_verify_locations(ca)
        except (ssl.SSLError, OSError) as exc:
            raise WebConfigError(f"tls_server_config: cannot load the client CA: "
                                 f"{getattr(exc, 'reason', None) or exc}") from None
        finally:
            _forget_memfds(ca)
    elif ctx.verify_mode != ssl.CERT_NONE:
        raise WebConfigError(f"client_auth_type {auth} needs client_ca_file (or client_ca)")
    sans = tls.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        raise WebConfigError("client_allowed_sans: expected a list of names")
    if sans and ctx.verify_mode != ssl.CERT_REQUIRED:
        raise WebConfigError("client_allowed_sans needs client_auth_type RequireAndVerifyClientCert")
    ctx.minimum_version = _version(tls.get("min_version", "TLS12"), "min_version")
    ctx.maximum_version = _version(tls.get("max_version", "TLS13"), "max_version")
    if ctx.minimum_version > ctx.maximum_version:
        raise WebConfigError("min_version is above max_version")
    suites = tls.get("cipher_suites")
    if suites:
        if not isinstance(suites, list):
            raise WebConfigError("cipher_suites: expected a list")
        unknown = [s for s in suites if s not in _CIPHERS]
        if unknown:
            raise WebConfigError(f"cipher_suites: unknown {unknown[0]!r} (Go's names, e.g. "
                                 "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")
        ctx.set_ciphers(":".join(_CIPHERS[s] for s in suites))
    if tls.get("prefer_server_cipher_suites", True) is True:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.get("curve_preferences"):
        raise WebConfigError("curve_preferences is not supported "
                             "(Python's ssl module cannot set a list of curves)")
    return ctx, frozenset(sans)


def _pem_or_file(tls: dict[str, Any], inline: str, file_key: str, base: str) -> str | None:
    """A path to the PEM: the file named, or the inline text in a memory file
    (ssl loads certificates from paths only)."""
    text = tls.get(inline)
    name = tls.get(file_key)
    if text is not None and name is not None:
        raise WebConfigError(f"give {inline} or {file_key}, not both")
    if name is not None:
        path = os.path.join(base, _string(name, file_key))
        if not os.path.isfile(path):
            raise WebConfigError(f"{file_key} {path}: no such file")
        return path
    if text is None:
        return None
    fd = os.memfd_create(f"sockscope-{inline}", os.MFD_CLOEXEC)
    os.write(fd, _string(text, inline).encode())
    return f"/proc/self/fd/{fd}"


def _forget_memfds(*paths: str | None) -> None:
    for path in paths:
        if path is not None and path.startswith("/proc/self/fd/"):
            os.close(int(path.rsplit("/", 1)[1]))


def _version(value: object, what: str) -> ssl.TLSVersion:
    text = _string(value, what)
    if text not in _VERSIONS:
        raise WebConfigError(f"{what}: unknown {text!r} (expected one of: {', '.join(_VERSIONS)})")
    return _VERSIONS[text]


def _bcrypt_hash(value: object, user: str) -> bytes:
    text = _string(value, f"basic_auth_users.{user}")
    if not re.fullmatch(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}", text):
        raise WebConfigError(f"basic_auth_users.{user}: not a bcrypt hash "
                             "(make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')")
    return text.encode()


def _check_headers(headers: dict[str, str]) -> None:
    frame = headers.get("X-Frame-Options")
    if frame is not None and frame.lower() not in ("deny", "sameorigin", ""):
        raise WebConfigError("headers.X-Frame-Options: expected deny or sameorigin")
    sniff = headers.get("X-Content-Type-Options")
    if sniff is not None and sniff.lower() not in ("nosniff", ""):
        raise WebConfigError("headers.X-Content-Type-Options: expected nosniff")
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise WebConfigError(f"headers.{name}: a header value is one line")


def _mapping(value: object, what: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebConfigError(f"{what}: expected a mapping of keys to values")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise WebConfigError(f"{what}: unknown key {key!r} (known: {', '.join(sorted(allowed))})")
    return value


def _string(value: object, what: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise WebConfigError(f"{what}: expected a string")
    return str(value)
