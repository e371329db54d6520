"""The command-signing keys: every command the outbox relay puts on a gateway's stream is signed with the newest.

Ed25519 keys of their own (a leaked token- or model-signing key can't sign commands, and the reverse), from
``FREQFLEET_COMMAND_SIGNING_KEYS`` (PEM blocks, the last one signs) or ``<data dir>/command-signing-keys``,
where the first start generates one (mode 0600; ``freqfleet rotate-keys --command`` adds one, which signs after
the next restart while the older ones still verify). The public keys are served at
``/.well-known/command-keys.json`` (JWKS form, ``router.py``) for the gateways; see :mod:`shared.bus.signing`.
"""

from __future__ import annotations

from management_server.config import ManagementSettings
from management_server.security.keys import KeyRing
from shared.bus.signing import CommandSigner

KEYS_DIR = "command-signing-keys"
WELL_KNOWN_PATH = "/.well-known/command-keys.json"


def load_command_keys(settings: ManagementSettings) -> KeyRing:
    return KeyRing.configured(
        settings.command_signing_keys, settings.data_dir / KEYS_DIR, "FREQFLEET_COMMAND_SIGNING_KEYS"
    )


def command_signer(keys: KeyRing) -> CommandSigner:
    return CommandSigner(keys.active.private, keys.active.kid)
