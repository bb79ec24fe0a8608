"""The platform's side of ``seal`` and of ``mqtt.compress``: key pairs, opening sealed values, an
``unseal`` tool, and ``decode_payload`` for the data messages.

The gateway never runs this: it holds no private key. It lives here as the reference
implementation of the format in ``edge_agent.privacy.seal`` (a platform team can run it or port it),
for the demo, and for the tests that prove a seal opens with the right key only::

    python -m edge_agent.platform keygen DIR                    # DIR/platform.key (0600), DIR/platform.pub
    python -m edge_agent.platform unseal --key DIR/platform.key [FILE]   # FILE or stdin: JSON

``unseal`` prints the JSON document with every ``{"sealed", "kid"}`` object (an event's sealed
field) replaced by the value it holds, and every record's ``"sealed": {"kid", "ct"}`` (wire v2:
one seal per record, holding ``{point: value}``) opened into the record's ``vals``. Exit 0 when every seal opened, 1 when one did not (it is left in place and
named on stderr), 2 for bad usage. The private key file is PEM PKCS#8, unencrypted, mode 0600.
``unseal`` takes a payload as it came off the wire, compressed or not.

``decode_payload`` reads a telemetry or events payload whichever way the gateway sent it
(docs/protocol.md, "Compressed payloads"): a payload starting with ``{`` is JSON; one starting
with the xz magic ``FD 37 7A 58 5A 00`` (a gateway with ``mqtt.compress: true``) is that JSON as
an xz stream. The first byte decides, on MQTT 3.1.1 and 5 alike (the MQTT 5 content type
``application/x-xz`` is only a hint: a 3.1.1 hop drops it). The gateway's encoder is
``edge_agent.uplink.payload``; the platform side does not import the uplink (nor paho), so the
magic is written here again and a test holds the two together.

"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import lzma
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import EdgeAgentError
from ..privacy.seal import (NONCE_BYTES, PUB_BYTES, TAG_BYTES, SealError, derive_key, is_record_seal, is_sealed,
                           kid_of)

__all__ = ["PayloadError", "decode_payload", "payload_json", "XZ_MAGIC", "SealError", "open_sealed", "open_record",
           "unseal_all", "generate_platform_keypair", "load_private_key",
           "main_unseal", "main"]


XZ_MAGIC = b"\xfd7zXZ\x00"  # uplink/payload.py's, written again (the platform stands apart)
MAX_PAYLOAD_BYTES = 64 * 1024**2  # decompressed: a gateway's message is far smaller (batch_max)


class PayloadError(EdgeAgentError, ValueError):
    """A payload that is neither a gateway's JSON nor its xz stream of JSON."""


def payload_json(data: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The JSON text of a payload: ``data`` itself, or what its xz stream holds (at most
    ``max_bytes``, so a hostile payload cannot make the platform inflate gigabytes)."""
    data = bytes(data)
    if not data.startswith(XZ_MAGIC):
        return data
    inflater = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        text = inflater.decompress(data, max_length=max_bytes)
    except lzma.LZMAError as exc:
        raise PayloadError(f"an xz payload that does not decompress ({exc})") from None
    if not inflater.eof:
        if len(text) >= max_bytes:
            raise PayloadError(f"an xz payload holding more than {max_bytes:,} bytes")
        raise PayloadError("an xz payload cut short (its stream does not end)")
    if inflater.unused_data:
        raise PayloadError(f"{len(inflater.unused_data)} byte(s) after the xz stream")
    return text


def decode_payload(data: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """A telemetry or events payload (JSON, or xz-compressed JSON) as its JSON object;
    ``PayloadError`` when it is neither, or not a JSON object."""
    data = bytes(data)
    if not data:
        raise PayloadError("an empty payload")
    if not data.startswith((b"{", XZ_MAGIC)):
        raise PayloadError(f"a payload that is neither JSON nor xz (first byte 0x{data[0]:02x})")
    text = payload_json(data, max_bytes=max_bytes)
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"a JSON {type(doc).__name__}, not an object")
    return doc


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def open_sealed(obj: Any, private_key: X25519PrivateKey) -> Any:
    """The value inside a sealed object; ``SealError`` for a wrong key, a wrong kid or tampering."""
    if not is_sealed(obj):
        raise SealError('not a sealed object: expected {"sealed": "<base64>", "kid": "<hex>"}')
    return _open(obj["kid"], obj["sealed"], private_key)


def open_record(record: dict[str, Any], private_key: X25519PrivateKey) -> dict[str, Any]:
    """A wire v2 record with its ``sealed`` ``{"kid", "ct"}`` opened: the points it holds merged
    into ``vals``, ``sealed`` gone. A record without a seal comes back as it is; ``SealError``
    when the seal does not open or does not hold a JSON object of points."""
    seal = record.get("sealed")
    if seal is None:
        return record
    if not is_record_seal(seal):
        raise SealError('not a record seal: expected {"kid": "<hex>", "ct": "<base64>"}')
    points = _open(seal["kid"], seal["ct"], private_key)
    if not isinstance(points, dict):
        raise SealError("a record seal opened but does not hold an object of points")
    opened = {k: v for k, v in record.items() if k != "sealed"}
    opened["vals"] = {**(record.get("vals") or {}), **points}
    return opened


def _open(kid: str, sealed: str, private_key: X25519PrivateKey) -> Any:
    recipient_raw = _raw(private_key.public_key())
    if kid != kid_of(recipient_raw):
        raise SealError(f"sealed for key {kid}, this private key is {kid_of(recipient_raw)}")
    try:
        blob = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError):
        raise SealError("sealed data is not valid base64") from None
    if len(blob) < PUB_BYTES + NONCE_BYTES + TAG_BYTES:
        raise SealError(f"sealed data is {len(blob)} bytes, shorter than the {PUB_BYTES + NONCE_BYTES + TAG_BYTES} "
                        "bytes of its header and tag")
    head = PUB_BYTES + NONCE_BYTES
    eph_raw, nonce, ciphertext = blob[:PUB_BYTES], blob[PUB_BYTES:head], blob[head:]
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_raw))
        aes = AESGCM(derive_key(shared, eph_raw, recipient_raw))
        plaintext = aes.decrypt(nonce, ciphertext, kid.encode("ascii"))
    except (InvalidTag, ValueError):
        raise SealError("sealed data does not open with this key (wrong key or tampered data)") from None
    try:
        return json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SealError("sealed data opened but does not hold UTF-8 JSON") from None


def unseal_all(doc: Any, private_key: X25519PrivateKey, failures: list[str] | None = None, where: str = "$") -> Any:
    """``doc`` with every sealed object opened (an event's field, a record's seal merged into its
    ``vals``, ``open_record``); one that does not open is kept and noted in ``failures``."""
    if isinstance(doc, dict) and "vals" in doc and is_record_seal(doc.get("sealed")):
        try:
            doc = open_record(doc, private_key)
        except SealError as exc:
            if failures is None:
                raise
            failures.append(f"{where}.sealed: {exc}")
    if is_sealed(doc):
        try:
            return open_sealed(doc, private_key)
        except SealError as exc:
            if failures is None:
                raise
            failures.append(f"{where}: {exc}")
            return doc
    if isinstance(doc, dict):
        return {k: unseal_all(v, private_key, failures, f"{where}.{k}") for k, v in doc.items()}
    if isinstance(doc, list):
        return [unseal_all(v, private_key, failures, f"{where}[{i}]") for i, v in enumerate(doc)]
    return doc


def generate_platform_keypair(directory: str | Path) -> tuple[Path, Path]:
    """Write ``platform.key`` (PEM PKCS#8, 0600) and ``platform.pub`` (base64 raw, one line) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / "platform.key", directory / "platform.pub"
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_text(base64.b64encode(_raw(key.public_key())).decode("ascii") + "\n", encoding="ascii")
    return private_path, public_path


def load_private_key(path: str | Path) -> X25519PrivateKey:
    """Read a PEM PKCS#8 X25519 private key (as ``generate_platform_keypair`` writes it)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise SealError(f"private key file {path} does not exist") from None
    except (OSError, ValueError, TypeError) as exc:
        raise SealError(f"private key file {path}: not a readable unencrypted PEM private key "
                        f"({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    if not isinstance(key, X25519PrivateKey):
        raise SealError(f"private key file {path}: not an X25519 key")
    return key


def main_unseal(argv: Sequence[str]) -> int:
    """``unseal --key PRIVATE [FILE]``: print the JSON (FILE or stdin) with every seal opened."""
    parser = argparse.ArgumentParser(prog="edge-agent unseal", description="open sealed values in a payload")
    parser.add_argument("--key", required=True, help="the platform's private key (PEM)")
    parser.add_argument("file", nargs="?", help="JSON payload, or its xz stream (default: stdin)")
    args = parser.parse_args(list(argv))
    try:
        key = load_private_key(args.key)
        raw = Path(args.file).read_bytes() if args.file else _stdin_bytes()
        doc = json.loads(payload_json(raw))
    except SealError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: payload is not readable JSON: {exc}", file=sys.stderr)
        return 1
    failures: list[str] = []
    out = unseal_all(doc, key, failures)
    print(json.dumps(out, ensure_ascii=False, indent=2))
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _stdin_bytes() -> bytes:
    binary = getattr(sys.stdin, "buffer", None)  # absent when stdin is a text stream (tests, embedding)
    return binary.read() if binary is not None else sys.stdin.read().encode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["unseal"]:
        return main_unseal(args[1:])
    if args[:1] == ["keygen"] and len(args) == 2:
        try:
            private_path, public_path = generate_platform_keypair(args[1])
        except FileExistsError:
            print(f"error: {Path(args[1]) / 'platform.key'} already exists; it is kept", file=sys.stderr)
            return 1
        print(f"private key {private_path} (keep it on the platform)\npublic key  {public_path} "
              f"(privacy.platform_key_file on gateways)")
        return 0
    print("usage: python -m edge_agent.platform unseal --key PRIVATE [FILE] | keygen DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
