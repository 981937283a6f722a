"""The exporter-toolkit web config file: what is accepted, what is refused with a
line saying why, basic auth against bcrypt hashes, TLS contexts (#16)."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import bcrypt
import pytest

from certs import make_cert
from sockscope.exporter.webconfig import WebConfigError, duration, load, parse


def auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_empty_and_missing_sections() -> None:
    config = parse(None)
    assert config.ssl_context is None and config.authorized(None)
    assert parse({}).users == {}


@pytest.mark.parametrize(("data", "message"), [
    ([1, 2], "expected a mapping"),
    ({"tls_server_config": {"cert_file": "x"}, "bogus": 1}, "unknown key 'bogus'"),
    ({"tls_server_config": {"certfile": "x"}}, "unknown key 'certfile'"),
    ({"tls_server_config": {"cert_file": "/nonexistent.crt", "key_file": "/nonexistent.key"}},
     "no such file"),
    ({"tls_server_config": {}}, "needs cert_file and key_file"),
    ({"basic_auth_users": {"alice": "plaintext"}}, "not a bcrypt hash"),
    ({"basic_auth_users": ["alice"]}, "expected a mapping"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}}, "deny or sameorigin"),
    ({"http_server_config": {"headers": {"Server": "x"}}}, "unknown key 'Server'"),
    ({"http_server_config": {"http2": "yes"}}, "true or false"),
    ({"rate_limit": {"interval": "fast", "burst": 1}}, "not a duration"),
    ({"rate_limit": {"interval": "1s", "burst": 0}}, "at least 1"),
])
def test_bad_configs_are_refused_with_a_reason(data: object, message: str) -> None:
    with pytest.raises(WebConfigError, match=message):
        parse(data)


def test_load_names_the_file_and_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "web.yml"
    bad.write_text("basic_auth_users:\n  alice: [unclosed\n")
    with pytest.raises(WebConfigError, match=rf"web config {bad}: .*\(line \d+\)"):
        load(str(bad))
    with pytest.raises(WebConfigError, match="No such file"):
        load(str(tmp_path / "missing.yml"))


def test_durations() -> None:
    assert duration("1s", "x") == 1.0
    assert duration("1m30s", "x") == 90.0
    assert duration("250ms", "x") == 0.25
    assert duration("0", "x") == 0.0
    with pytest.raises(WebConfigError):
        duration("1 s", "x")


def test_basic_auth_with_bcrypt_hashes_including_htpasswds_2y() -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    htpasswd_style = "$2y$" + hashed[4:]
    config = parse({"basic_auth_users": {"alice": hashed, "bob": htpasswd_style}})
    assert config.authorized(auth("alice", "s3cret"))
    assert config.authorized(auth("bob", "s3cret"))
    assert config.authorized(auth("alice", "s3cret"))  # cached the second time
    assert not config.authorized(auth("alice", "wrong"))
    assert not config.authorized(auth("carol", "s3cret"))
    assert not config.authorized(None)
    assert not config.authorized("Bearer abc")
    assert not config.authorized("Basic !!!notbase64")
    assert not config.authorized("Basic " + base64.b64encode(b"no-colon").decode())


def test_rate_limit_refuses_past_the_burst() -> None:
    config = parse({"rate_limit": {"interval": "1h", "burst": 2}})
    assert config.rate_limit is not None
    assert [config.rate_limit.allow() for _ in range(3)] == [True, True, False]


def test_tls_from_files_relative_to_the_config(tmp_path: Path) -> None:
    make_cert(tmp_path)
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n")
    config = load(str(tmp_path / "web.yml"))
    assert config.ssl_context is not None
    assert config.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert config.ssl_context.verify_mode == ssl.CERT_NONE


def test_tls_inline_pem_and_client_certificates(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    config = parse({"tls_server_config": {
        "cert": cert.read_text(), "key": key.read_text(), "client_ca": cert.read_text(),
        "client_auth_type": "RequireAndVerifyClientCert", "client_allowed_sans": ["prometheus"],
        "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]}})
    assert config.ssl_context is not None and config.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert config.sans_allowed({"subjectAltName": (("DNS", "prometheus"),)})
    assert not config.sans_allowed({"subjectAltName": (("DNS", "other"),)})
    assert not config.sans_allowed(None)


@pytest.mark.parametrize(("extra", "message"), [
    ({"client_auth_type": "RequireAnyClientCert"}, "not supported"),
    ({"client_auth_type": "RequestClientCert"}, "not supported"),
    ({"client_auth_type": "Sometimes"}, "unknown 'Sometimes'"),
    ({"client_auth_type": "RequireAndVerifyClientCert"}, "needs client_ca_file"),
    ({"min_version": "TLS14"}, "unknown 'TLS14'"),
    ({"min_version": "TLS13", "max_version": "TLS12"}, "above max_version"),
    ({"cipher_suites": ["TLS_FAST"]}, "unknown 'TLS_FAST'"),
    ({"curve_preferences": ["X25519"]}, "not supported"),
    ({"client_allowed_sans": ["x"]}, "needs client_auth_type RequireAndVerifyClientCert"),
])
def test_tls_settings_python_cannot_honour_are_refused(tmp_path: Path, extra: dict[str, object],
                                                      message: str) -> None:
    cert, key = make_cert(tmp_path)
    with pytest.raises(WebConfigError, match=message):
        parse({"tls_server_config": {"cert_file": str(cert), "key_file": str(key), **extra}})


def test_a_key_that_does_not_match_the_certificate(tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path, "one")
    _, other_key = make_cert(tmp_path, "two")
    with pytest.raises(WebConfigError, match="cannot load the certificate and key"):
        parse({"tls_server_config": {"cert_file": str(cert), "key_file": str(other_key)}})
