"""Signed bus entries: only the management server can make a gateway act, only an enrolled gateway can report.

Whoever can write to Redis could otherwise put a ``START_BOT`` with any strategy on any gateway's stream. So
the management server signs every command entry as it publishes it (Ed25519, a command-signing key of its own,
published at ``/.well-known/command-keys.json``), and a gateway acts only on entries whose signature checks out.

Each entry's leaf is the sha256 of its stream (so the target gateway) and of its envelope's JSON, which holds the
type, the command id (``event_id``), the bot id, the generation and the whole payload (strategy source, model
bundle and its own signature). The outbox relay signs a whole pass at once: the signature covers
``freqfleet-command/1``, ``batch``, the signing time in milliseconds and the root of the Merkle tree of the
pass's leaves; each entry carries the path from its leaf to that root. The signature travels in four fields beside
``envelope``: ``sig`` (Base64), ``sig_kid``, ``sig_at`` and ``sig_path`` (index, count, sibling hashes). So a
gateway verifies one Ed25519 signature per batch and a few hashes per entry. (An entry without ``sig_path`` is the
first, single-entry format: the signature covers the stream, the time and the envelope's sha256 directly.)

A gateway refuses (and dead-letters, with the reason) an entry whose signature is missing, made by an unknown
key, wrong, older than its bound (``FREQFLEET_COMMAND_MAX_AGE``) or from the future, or a copy of an entry it
has seen already under another entry id (a replay). The bound is the longest a command may wait in a stream for
a gateway that is down: the management server reconciles what it wants again later.

Events go the other way the same way, under another domain (``freqfleet-event/1``, so a command's signature is
never an event's): each gateway signs what it puts on ``freqfleet:events`` with the Ed25519 key of its identity
(``sig_kid`` is its gateway id), and the management server admits only entries signed by an enrolled, not revoked
gateway whose envelope says it comes from that gateway (see ``management_server.gateways.signatures``).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_FIELD = "sig"
KEY_FIELD = "sig_kid"
SIGNED_AT_FIELD = "sig_at"
PATH_FIELD = "sig_path"
DOMAIN = "freqfleet-command/1"
EVENT_DOMAIN = "freqfleet-event/1"
FUTURE_SKEW_MS = 60_000  # clocks of two hosts may disagree this much


class CommandRefused(Exception):
    """An entry that must not be acted on; ``reason`` says why (missing, unknown key, bad, stale, replayed)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def signing_message(stream: str, signed_at_ms: int, envelope_json: str, domain: str = DOMAIN) -> bytes:
    """What a single-entry signature (the first format, still verified) covers."""
    digest = hashlib.sha256(envelope_json.encode()).hexdigest()
    return f"{domain}\n{stream}\n{signed_at_ms}\n{digest}".encode()


# ---------------------------------------------------------------------------------- batches: one signature, many
# entries. A signer hashes each entry (its stream and envelope) into a leaf, signs the root of the Merkle tree of a
# batch once, and gives each entry the path from its leaf to the root (``sig_path``: index, count, sibling
# hashes). A verifier recomputes the root from the entry and its path and checks the root's signature — once per
# batch, remembered in a small cache — so verifying costs a few hashes per entry, not an Ed25519 verification.


def _leaf(stream: str, envelope_json: str) -> bytes:
    return hashlib.sha256(b"\x00" + stream.encode() + b"\n" + hashlib.sha256(envelope_json.encode()).digest()).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _tree(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of ``leaves`` and, per leaf, its siblings from the bottom up (an odd last node goes up alone)."""
    proofs: list[list[bytes]] = [[] for _ in leaves]
    positions = list(range(len(leaves)))
    level = leaves
    while len(level) > 1:
        for i, position in enumerate(positions):
            sibling = position ^ 1
            if sibling < len(level):
                proofs[i].append(level[sibling])
            positions[i] = position // 2
        level = [_node(level[j], level[j + 1]) if j + 1 < len(level) else level[j] for j in range(0, len(level), 2)]
    return level[0], proofs


def _root(leaf: bytes, index: int, count: int, siblings: list[bytes]) -> bytes:
    node, position, width, used = leaf, index, count, 0
    while width > 1:
        if position ^ 1 < width:
            if used >= len(siblings):
                raise ValueError("path too short")
            sibling = siblings[used]
            used += 1
            node = _node(sibling, node) if position & 1 else _node(node, sibling)
        position //= 2
        width = (width + 1) // 2
    if used != len(siblings):
        raise ValueError("path too long")
    return node


def batch_message(signed_at_ms: int, root: bytes, domain: str) -> bytes:
    return f"{domain}\nbatch\n{signed_at_ms}\n{root.hex()}".encode()


@dataclass(frozen=True)
class EntrySigner:
    """Who signs stream entries: a private key, its ``kid`` and the domain (commands or events)."""

    private: Ed25519PrivateKey
    kid: str
    domain: str = DOMAIN

    def fields(self, stream: str, envelope_json: str, now_ms: int | None = None) -> dict[str, str]:
        """The signature fields of one entry (a batch of one)."""
        return self.batch([(stream, envelope_json)], now_ms)[0]

    def batch(self, entries: list[tuple[str, str]], now_ms: int | None = None) -> list[dict[str, str]]:
        """The signature fields of each (stream, envelope JSON), under one signature."""
        if not entries:
            return []
        signed_at = int(time.time() * 1000) if now_ms is None else now_ms
        root, proofs = _tree([_leaf(stream, envelope) for stream, envelope in entries])
        signature = base64.b64encode(self.private.sign(batch_message(signed_at, root, self.domain))).decode()
        count = len(entries)
        return [
            {
                SIGNATURE_FIELD: signature,
                KEY_FIELD: self.kid,
                SIGNED_AT_FIELD: str(signed_at),
                PATH_FIELD: f"{i}.{count}.{base64.b64encode(b''.join(proof)).decode()}",
            }
            for i, proof in enumerate(proofs)
        ]


CommandSigner = EntrySigner  # the management server's: the newest command-signing key (domain: commands)


class VerifiedRoots:
    """Batch signatures already verified (signature → root), so a batch costs one Ed25519 verification."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._roots: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, kid: str, signature: str) -> bytes | None:
        root = self._roots.get((kid, signature))
        if root is not None:
            self._roots.move_to_end((kid, signature))
        return root

    def put(self, kid: str, signature: str, root: bytes) -> None:
        self._roots[(kid, signature)] = root
        if len(self._roots) > self.size:
            self._roots.popitem(last=False)


def _text(fields: Mapping[bytes, bytes], name: str) -> str | None:
    value = fields.get(name.encode())
    return None if value is None else value.decode(errors="replace")


def _what(domain: str) -> str:
    return "command" if domain == DOMAIN else "entry"


def signature_of(fields: Mapping[bytes, bytes], domain: str = DOMAIN) -> tuple[str, str, int]:
    """The entry's (signature, kid, signed-at ms).

    :raises CommandRefused: a field is missing or malformed.
    """
    signature, kid, signed_at = (_text(fields, f) for f in (SIGNATURE_FIELD, KEY_FIELD, SIGNED_AT_FIELD))
    if not signature or not kid or not signed_at:
        who = "the management server" if domain == DOMAIN else "a gateway"
        raise CommandRefused("missing", f"the {_what(domain)} is not signed by {who}")
    if not signed_at.isdigit() or len(signed_at) > 15:
        raise CommandRefused("bad", f"the {_what(domain)}'s signing time {signed_at[:20]!r} is not a time")
    return signature, kid, int(signed_at)


def replay_key(fields: Mapping[bytes, bytes]) -> str:
    """What identifies one signed entry (its signature and its place in the signed batch)."""
    return hashlib.sha256(
        fields.get(SIGNATURE_FIELD.encode(), b"") + b"|" + fields.get(PATH_FIELD.encode(), b"")
    ).hexdigest()


def verify(
    public: Ed25519PublicKey,
    stream: str,
    fields: Mapping[bytes, bytes],
    envelope_json: str,
    *,
    max_age_ms: int,
    now_ms: int | None = None,
    domain: str = DOMAIN,
    verified: VerifiedRoots | None = None,
) -> None:
    """Check one entry's signature with the key its ``sig_kid`` names (``verified``: batch signatures known good).

    :raises CommandRefused: bad signature, too old, from the future.
    """
    signature, kid, signed_at = signature_of(fields, domain)
    what = _what(domain)
    bad = CommandRefused(
        "bad", f"the {what}'s signature (key {kid[:16]}) does not match it: changed, or signed for another stream"
    )
    path = _text(fields, PATH_FIELD)
    try:
        if path is None:  # the single-entry format
            public.verify(
                base64.b64decode(signature, validate=True), signing_message(stream, signed_at, envelope_json, domain)
            )
        else:
            index, count, proof = path.split(".", 2)
            raw_proof = base64.b64decode(proof, validate=True)
            if len(raw_proof) % 32 or not index.isdigit() or not count.isdigit() or int(index) >= int(count):
                raise ValueError("not a path")
            siblings = [raw_proof[i : i + 32] for i in range(0, len(raw_proof), 32)]
            root = _root(_leaf(stream, envelope_json), int(index), int(count), siblings)
            known = None if verified is None else verified.get(kid, signature + "|" + str(signed_at))
            if known != root:
                public.verify(base64.b64decode(signature, validate=True), batch_message(signed_at, root, domain))
                if verified is not None:
                    verified.put(kid, signature + "|" + str(signed_at), root)
    except (InvalidSignature, ValueError):
        raise bad from None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if signed_at > now + FUTURE_SKEW_MS:
        raise CommandRefused("stale", f"the {what} was signed in the future: check the hosts' clocks")
    if now - signed_at > max_age_ms:
        raise CommandRefused(
            "stale",
            f"the {what} was signed {(now - signed_at) / 1000:.0f} s ago, more than {max_age_ms / 1000:.0f} s: "
            "too old to act on" + (" (FREQFLEET_COMMAND_MAX_AGE)" if domain == DOMAIN else ""),
        )
