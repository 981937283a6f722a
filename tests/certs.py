"""Certificates for TLS tests, made with openssl (Debian's openssl package)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_cert(directory: Path, name: str = "server", ca: tuple[Path, Path] | None = None,
              san: str = "DNS:localhost,IP:127.0.0.1") -> tuple[Path, Path]:
    """A certificate and key made with openssl: self-signed, or signed by ``ca``."""
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    subj = ["-subj", f"/CN={name}", "-addext", f"subjectAltName={san}"]
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-days", "2", "-keyout", str(key), "-out", str(cert), *subj],
                       check=True, capture_output=True)
    else:
        csr = directory / f"{name}.csr"
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(csr), *subj],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                        "-CAcreateserial", "-days", "2", "-copy_extensions", "copy", "-out", str(cert)],
                       check=True, capture_output=True)
    return cert, key
