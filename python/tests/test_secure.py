"""Auth and TLS: the client against a server with static tokens and TLS (a CA and a
certificate for 127.0.0.1 made here with openssl), over gRPC and Arrow Flight."""

from __future__ import annotations

import subprocess

import pytest

import quiver
from conftest import Server, quiver_binary
from test_client import labels


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certificates(dir):
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) paths."""
    ca_key, ca, key, csr, cert = (dir / n for n in ("ca.key", "ca.pem", "server.key",
                                                    "server.csr", "server.pem"))
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=quiver test CA", "-days", "2")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = dir / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


def token(auth_file, name: str, role: str) -> str:
    done = subprocess.run([quiver_binary(), "token", "create", "--name", name, "--role", role,
                           "--auth-file", str(auth_file)], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def secure(project, tmp_path_factory):
    dir = tmp_path_factory.mktemp("secure")
    ca, cert, key = certificates(dir)
    auth = dir / "auth.yaml"
    tokens = {role: token(auth, f"py-{role}", role) for role in ("reader", "admin")}
    root = tmp_path_factory.mktemp("secure-server")
    (root / "data").mkdir()
    server = Server(root, "--auth-file", str(auth), "--tls-cert", str(cert),
                    "--tls-key", str(key), "--source-root", str(project),
                    "--labels-root", str(project))
    yield server, ca, tokens
    server.stop()


def test_tokens_roles_and_tls_over_grpc_and_flight(secure, project):
    server, ca, tokens = secure
    url = f"https://{server.addr}"
    with quiver.Client(url, token=tokens["admin"], tls_ca=str(ca)) as admin:
        admin.apply(project / "features")
        admin.materialize("2025-12-30T00:00:00Z", "2026-01-02T00:00:00Z")
    with quiver.Client(url, token=tokens["reader"], tls_ca=str(ca)) as reader:
        got = reader.get_online_features(service="model", entity_rows=[{"user_id": 1}])
        assert got.to_dict()["f_int64"] == [11]
        assert reader.get_historical_features(entity_df=labels(),
                                              service="model").to_arrow().num_rows == 4
        with pytest.raises(quiver.PermissionDenied):
            reader.apply(project / "features")
    with quiver.Client(url, tls_ca=str(ca)) as anonymous:
        with pytest.raises(quiver.Unauthenticated):
            anonymous.list_entities()
        with pytest.raises(quiver.Unauthenticated):
            anonymous.get_historical_features(entity_df=labels(), service="model")
    with quiver.Client(url, token="qvr_wrong", tls_ca=str(ca)) as wrong:
        with pytest.raises(quiver.Unauthenticated):
            wrong.get_online_features(service="model", entity_rows=[{"user_id": 1}])
