"""Certificates and clients for the HTTPS tests: a trustme CA, files on disk, keys in every
format the server reads, and TLS client contexts."""

import datetime
import http.client
import json
import shutil
import socket
import ssl
import subprocess

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

PASSWORD = "криївка"
OPENSSL = shutil.which("openssl")


class Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and their files."""

    def __init__(self, tmp_path, key_type=trustme.KeyType.ECDSA, name="server"):
        self.dir = tmp_path
        self.ca = trustme.CA(key_type=key_type)
        self.server = self.ca.issue_cert("127.0.0.1", "localhost", key_type=key_type)
        self.ca_file = str(tmp_path / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.cert_file, self.key_file = self.write(self.server, name)

    def write(self, leaf, name):
        """Writes a leaf's chain and key; returns (cert path, key path)."""
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return str(cert), str(key)

    def client_context(self, client=None, tmp_name="client"):
        """A client context trusting the CA, with ``client`` (a trustme leaf) as its
        certificate if given."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.set_alpn_protocols(["http/1.1"])
        if client is not None:
            path = self.dir / f"{tmp_name}.pem"
            client.private_key_and_cert_chain_pem.write_to_path(str(path))
            ctx.load_cert_chain(str(path))
        return ctx


def key_bytes(private_key, fmt, password=None):
    """A cryptography private key as PEM in ``fmt`` ('pkcs8' or 'traditional'),
    encrypted when a password is given."""
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password is not None
        else serialization.NoEncryption()
    )
    pf = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }[fmt]
    return private_key.private_bytes(serialization.Encoding.PEM, pf, encryption)


def load_key(pem):
    return serialization.load_pem_private_key(pem, password=None)


def self_signed(tmp_path, kind, name="localhost", days=30, not_after=None):
    """A self-signed certificate and its key ('rsa', 'ec' or 'ed25519'); returns
    (cert path, key object)."""
    key = {
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
        "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[kind]()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "UA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stogie"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    end = not_after or now + datetime.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - datetime.timedelta(days=1), end - datetime.timedelta(days=1)))
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, None if kind == "ed25519" else hashes.SHA256())
    )
    path = tmp_path / f"{name}-{kind}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path), key


def https_get(addr, context, path="/", server_hostname="localhost", timeout=5):
    """One GET over a fresh TLS connection: (status, body, facts of the TLS socket)."""
    sock = tls_connect(addr, context, server_hostname, timeout)
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        facts = {
            "version": sock.version(),
            "cipher": sock.cipher(),
            "alpn": sock.selected_alpn_protocol(),
            "peer": sock.getpeercert(binary_form=True),
        }
        return resp.status, resp.read(), facts
    finally:
        conn.close()


def environ_app(environ, start_response):
    """Answers with the str-valued environ as JSON."""
    env = {k: v for k, v in environ.items() if isinstance(v, str)}
    env["_types"] = sorted({type(v).__name__ for k, v in environ.items() if k.startswith("SSL_")})
    body = json.dumps(env).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [body]


def tls_connect(addr, context, server_hostname="localhost", timeout=5):
    """A TLS socket connected to ``addr`` (handshake done)."""
    raw = socket.create_connection(addr, timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def openssl_cert(tmp_path, name, ca=None, extensions=None):
    """A certificate for CN=``name`` made as the common tutorial does, with the ``openssl``
    binary: a request, then ``openssl x509 -req``, signed by ``ca`` (a trustme CA) or
    self-signed. Without ``extensions`` (lines of an -extfile) that makes an X.509
    version 1 certificate. Returns (cert path, key path)."""
    cert, key, csr = (str(tmp_path / f"{name}.{ext}") for ext in ("pem", "key", "csr"))

    def openssl(*args):
        subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=30)

    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
    sign = ["x509", "-req", "-in", csr, "-days", "30", "-out", cert]
    if ca is None:
        sign += ["-signkey", key]
    else:
        ca_cert, ca_key = tmp_path / f"{name}-ca.pem", tmp_path / f"{name}-ca.key"
        ca.cert_pem.write_to_path(str(ca_cert))
        ca.private_key_pem.write_to_path(str(ca_key))
        sign += ["-CA", str(ca_cert), "-CAkey", str(ca_key), "-set_serial", "1"]
    if extensions:
        ext = tmp_path / f"{name}.ext"
        ext.write_text("\n".join(extensions) + "\n")
        sign += ["-extfile", str(ext)]
    openssl(*sign)
    return cert, key


def cert_version(path):
    """The X.509 version of the first certificate in a PEM file (1 or 3)."""
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).version.value + 1
