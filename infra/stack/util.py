#!/usr/bin/env python3
"""Small helpers for infra/stack.sh (run with the venv's python).

    util.py wait-http URL [TIMEOUT_SECONDS]   exit 0 once URL answers with any HTTP status
    util.py port-open PORT                    exit 0 if something accepts TCP on 127.0.0.1:PORT
    util.py jwt-key PEM_PATH KID_PATH         create an Ed25519 key (PKCS8 PEM) + key id if missing,
                                              and its public half (*.pub.pem); prints the key id
    util.py sam-env OUT KEY=VALUE...          write a `sam local invoke --env-vars` file
"""

import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request


def wait_http(url, timeout=30.0):
    deadline = time.monotonic() + float(timeout)
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return 0
        except urllib.error.HTTPError:
            return 0  # any HTTP status means the server answers
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.1)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=1):
            return 0
    except OSError:
        return 1


def jwt_key(pem_path, kid_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if os.path.exists(pem_path):
        with open(pem_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        tmp = pem_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, pem_path)
    raw_pub = key.public_key().public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    kid = hashlib.sha256(raw_pub).hexdigest()[:16]
    with open(kid_path, "w") as f:
        f.write(kid + "\n")
    # The public half, for functions that only verify (JWT_PUBLIC_KEY).
    pub_pem = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    with open(public_path(pem_path), "wb") as f:
        f.write(pub_pem)
    print(kid)
    return 0


def public_path(pem_path):
    return pem_path[: -len(".pem")] + ".pub.pem"


def sam_env(out_path, pairs):
    """`sam local invoke --env-vars` file: the values apply to every
    function, where the template declares the variable."""
    params = dict(pair.split("=", 1) for pair in pairs)
    tmp = out_path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"Parameters": params}, f, indent=2)
    os.replace(tmp, out_path)
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "wait-http":
        return wait_http(argv[1], *(argv[2:3]))
    if len(argv) == 2 and argv[0] == "port-open":
        return port_open(argv[1])
    if len(argv) == 3 and argv[0] == "jwt-key":
        return jwt_key(argv[1], argv[2])
    if len(argv) >= 2 and argv[0] == "sam-env":
        return sam_env(argv[1], argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
