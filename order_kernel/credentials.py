"""Exchange credentials for the order kernel: from environment variables or an encrypted file.

Only the order kernel reads credentials (DESIGN "Credentials"); they must never reach a log, an
error message or a repr (RELIABILITY promise 8). Every secret is wrapped in `Secret`, whose
repr/str/format are redacted, which refuses pickling, and whose value is read only through
`reveal()` at the one place that signs a request.

Encrypted file (JSON, safe to back up; useless without the passphrase):

    {"format": "stratagem-credentials/1", "kdf": "scrypt", "n": 32768, "r": 8, "p": 1,
     "salt": "<base64>", "token": "<Fernet token>"}

The Fernet key is scrypt(passphrase, salt) and the passphrase comes from an environment
variable (default `STRATAGEM_CREDENTIALS_PASSPHRASE`). The token decrypts to
`{"<venue>": {"api_key": ..., "api_secret": ..., "passphrase": ...}}`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from order_kernel.errors import OrderKernelError

FILE_FORMAT: Final = "stratagem-credentials/1"
PASSPHRASE_ENV: Final = "STRATAGEM_CREDENTIALS_PASSPHRASE"
MIN_SCRYPT_N: Final = 2**14  # below this a stolen file is too cheap to brute-force
DEFAULT_SCRYPT_N: Final = 2**15
_REDACTED: Final = "***"


class CredentialsError(OrderKernelError):
    """Credentials missing or unreadable. Messages name variables, files and fields, never values."""


class Secret:
    """A string that does not print. Compare with `==` (constant time); read with `reveal()`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise CredentialsError("Secret(...) needs a non-empty str")
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call it only where a request is signed, never to log or print."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_REDACTED}')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]  # hashing would let a dict key leak equality

    def __reduce__(self) -> NoReturn:
        raise CredentialsError("a Secret cannot be pickled or copied out of the order kernel")


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """One venue account's keys (dataclass repr shows only redacted Secrets)."""

    venue: str
    api_key: Secret
    api_secret: Secret
    passphrase: Secret | None = None  # some venues (OKX, Coinbase) need a third value

    def ccxt_config(self) -> dict[str, str]:
        """The dict ccxt's exchange constructor takes; pass it straight in, never log it."""
        cfg = {"apiKey": self.api_key.reveal(), "secret": self.api_secret.reveal()}
        if self.passphrase is not None:
            cfg["password"] = self.passphrase.reveal()
        return cfg


def env_names(venue: str) -> tuple[str, str, str]:
    """Variable names for a venue: STRATAGEM_<VENUE>_API_KEY / _API_SECRET / _PASSPHRASE."""
    stem = "".join(c if c.isalnum() else "_" for c in venue.upper())
    return (
        f"STRATAGEM_{stem}_API_KEY",
        f"STRATAGEM_{stem}_API_SECRET",
        f"STRATAGEM_{stem}_PASSPHRASE",
    )


def from_env(venue: str, environ: Mapping[str, str]) -> ApiCredentials:
    """Credentials of `venue` from environment variables (pass `os.environ`; injected for tests)."""
    key_name, secret_name, pass_name = env_names(venue)
    missing = [n for n in (key_name, secret_name) if not environ.get(n)]
    if missing:
        raise CredentialsError(
            f"credentials for venue {venue!r}: environment variable(s) {', '.join(missing)} "
            "unset or empty; export them, or use an encrypted credentials file"
        )
    phrase = environ.get(pass_name)
    return ApiCredentials(
        venue=venue,
        api_key=Secret(environ[key_name]),
        api_secret=Secret(environ[secret_name]),
        passphrase=Secret(phrase) if phrase else None,
    )


def _derive(passphrase: Secret, salt: bytes, n: int, r: int, p: int) -> bytes:
    raw = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.reveal().encode())
    return base64.urlsafe_b64encode(raw)


def write_encrypted(
    path: str | Path,
    credentials: Mapping[str, ApiCredentials],
    passphrase: Secret,
    *,
    salt: bytes | None = None,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> None:
    """Write an encrypted credentials file (mode 0600). `salt` defaults to 16 random bytes."""
    if scrypt_n < MIN_SCRYPT_N or scrypt_n & (scrypt_n - 1):
        raise CredentialsError(
            f"scrypt_n={scrypt_n}: use a power of two >= {MIN_SCRYPT_N} (default {DEFAULT_SCRYPT_N})"
        )
    salt = os.urandom(16) if salt is None else salt
    body: dict[str, dict[str, str]] = {}
    for venue in sorted(credentials):
        c = credentials[venue]
        entry = {"api_key": c.api_key.reveal(), "api_secret": c.api_secret.reveal()}
        if c.passphrase is not None:
            entry["passphrase"] = c.passphrase.reveal()
        body[venue] = entry
    token = Fernet(_derive(passphrase, salt, scrypt_n, 8, 1)).encrypt(json.dumps(body).encode())
    doc = {
        "format": FILE_FORMAT,
        "kdf": "scrypt",
        "n": scrypt_n,
        "r": 8,
        "p": 1,
        "salt": base64.b64encode(salt).decode(),
        "token": token.decode(),
    }
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)


def _bad(path: Path, what: str) -> NoReturn:
    raise CredentialsError(
        f"{path}: {what}; write the file with order_kernel.credentials.write_encrypted"
    )


def from_encrypted_file(
    path: str | Path,
    venue: str,
    environ: Mapping[str, str],
    *,
    passphrase_env: str = PASSPHRASE_ENV,
) -> ApiCredentials:
    """Credentials of `venue` from an encrypted file; the passphrase is read from
    `environ[passphrase_env]`."""
    p = Path(path)
    phrase = environ.get(passphrase_env)
    if not phrase:
        raise CredentialsError(
            f"{p}: environment variable {passphrase_env} (the file's passphrase) is unset or empty"
        )
    try:
        doc: Any = json.loads(p.read_text())
    except FileNotFoundError:
        raise CredentialsError(f"{p}: no such credentials file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _bad(p, f"not a readable JSON credentials file ({type(exc).__name__})")
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        _bad(p, f'`$.format` must be "{FILE_FORMAT}"')
    if doc.get("kdf") != "scrypt":
        _bad(p, '`$.kdf` must be "scrypt"')
    for field in ("n", "r", "p"):
        if not isinstance(doc.get(field), int) or doc[field] <= 0:
            _bad(p, f"`$.{field}` must be a positive integer")
    if doc["n"] < MIN_SCRYPT_N:
        _bad(p, f"`$.n` = {doc['n']} is below {MIN_SCRYPT_N}; re-encrypt with a stronger KDF")
    try:
        salt = base64.b64decode(str(doc.get("salt")), validate=True)
    except (binascii.Error, ValueError):
        _bad(p, "`$.salt` is not base64")
    token = doc.get("token")
    if not isinstance(token, str):
        _bad(p, "`$.token` must be a string")
    try:
        key = _derive(Secret(phrase), salt, doc["n"], doc["r"], doc["p"])
        plain = Fernet(key).decrypt(token.encode())
    except InvalidToken:
        raise CredentialsError(
            f"{p}: cannot decrypt: wrong passphrase in {passphrase_env}, or the file was altered"
        ) from None
    except ValueError:
        _bad(p, "scrypt parameters `$.n/$.r/$.p` are invalid")
    body: Any = None
    # raised below, outside the handler: the decode error object holds the plaintext
    with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError):
        body = json.loads(plain)
    if body is None:
        _bad(p, "decrypted content is not a JSON object")
    if not isinstance(body, dict) or venue not in body:
        venues = sorted(body) if isinstance(body, dict) else []
        _bad(p, f"no credentials for venue {venue!r} (venues in the file: {venues})")
    entry = body[venue]
    for field in ("api_key", "api_secret"):
        if not isinstance(entry, dict) or not isinstance(entry.get(field), str) or not entry[field]:
            _bad(p, f"`{venue}.{field}` is missing or empty")
    extra = entry.get("passphrase")
    if extra is not None and (not isinstance(extra, str) or not extra):
        _bad(p, f"`{venue}.passphrase` must be a non-empty string")
    return ApiCredentials(
        venue=venue,
        api_key=Secret(entry["api_key"]),
        api_secret=Secret(entry["api_secret"]),
        passphrase=Secret(extra) if extra else None,
    )


def load(
    venue: str, environ: Mapping[str, str], *, file: str | Path | None = None
) -> ApiCredentials:
    """The store's front door: the encrypted `file` when given, else environment variables."""
    if file is not None:
        return from_encrypted_file(file, venue, environ)
    return from_env(venue, environ)
