"""Check a koogate License offline: python3 verify_license.py PUBLIC_KEY.pem LICENSE_FILE

The License is BASE64URL(payload JSON) "." BASE64URL(Ed25519 signature of the first part);
the public key is what `koogate license public-key` prints. Needs the `cryptography` package.
"""
import base64
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import load_pem_public_key


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(token, public_key_pem):
    """The License's claims, or InvalidSignature if it was changed or signed by another key."""
    first, signature = token.strip().split(".")
    load_pem_public_key(public_key_pem).verify(b64url(signature), first.encode("ascii"))
    return json.loads(b64url(first))


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        pem = f.read()
    with open(sys.argv[2]) as f:
        token = f.read()
    try:
        claims = verify(token, pem)
    except InvalidSignature:
        sys.exit("refused: the signature does not match")
    print(json.dumps(claims, indent=2, ensure_ascii=False))
