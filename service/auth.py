"""Bearer-token authentication: a token maps to the principal that owns its jobs."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from sparsetrain.service.storage import PRINCIPAL_NAME

# The principal of every job when tokens are off.
ANONYMOUS = "anonymous"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    """Known token digests and their principals; empty means authentication is off."""

    def __init__(self, digests: dict[str, str]) -> None:
        self._principals = digests  # sha256 hex -> principal

    @classmethod
    def from_settings(cls, pairs: str | None, path: Path | None) -> TokenTable:
        """Parse ``principal:token`` pairs and a file of ``principal sha256hex`` lines.

        Raises ``ValueError`` naming the entry that is malformed, or a principal name that
        cannot be a folder name (``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``: it names the principal's
        storage namespace).
        """
        digests: dict[str, str] = {}
        for entry in (pairs or "").split(","):
            if not entry.strip():
                continue
            principal, sep, token = entry.strip().partition(":")
            if not sep or not principal or not token:
                raise ValueError("SPARSETRAIN_API_TOKENS entries must be 'principal:token'")
            _check_name(principal, "SPARSETRAIN_API_TOKENS")
            digests[token_digest(token)] = principal
        if path is not None:
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                parts = line.split()
                if len(parts) != 2 or len(parts[1]) != 64:
                    raise ValueError(f"{path}:{number}: expected 'principal sha256-hex'")
                _check_name(parts[0], f"{path}:{number}")
                digests[parts[1].lower()] = parts[0]
        return cls(digests)

    @property
    def enabled(self) -> bool:
        return bool(self._principals)

    def principal(self, token: str) -> str | None:
        """The principal of ``token``, or None. Compares digests in constant time."""
        digest = token_digest(token)
        found = None
        for known, principal in self._principals.items():
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def _check_name(principal: str, where: str) -> None:
    if not PRINCIPAL_NAME.match(principal):
        raise ValueError(
            f"{where}: principal {principal!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}}"
        )
