"""Credentials store: env vars and encrypted files load the right keys, and secrets never show
up in reprs, logs, exception messages or tracebacks."""

from __future__ import annotations

import base64
import copy
import json
import logging
import pickle
import traceback
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from hypothesis import given, settings
from hypothesis import strategies as st

from order_kernel.credentials import (
    PASSPHRASE_ENV,
    ApiCredentials,
    CredentialsError,
    Secret,
    _derive,
    env_names,
    from_encrypted_file,
    from_env,
    load,
    write_encrypted,
)

KEY = "AK-live-9f1c2e7d5b"
SECRET = "SK-very-secret-3a8b0c6d4e"
PHRASE = "okx-trading-pass"
FILE_PASS = "correct horse battery staple"
FAST_N = 2**14  # the minimum the store accepts; keeps the tests fast
ALL_SECRETS = (KEY, SECRET, PHRASE, FILE_PASS)


def _creds(venue: str = "binance") -> ApiCredentials:
    return ApiCredentials(venue, Secret(KEY), Secret(SECRET), Secret(PHRASE))


def _text_of(exc: BaseException) -> str:
    """Everything a user or a log could see of an exception, chained ones included."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc.args)


def _assert_clean(text: str) -> None:
    for s in ALL_SECRETS:
        assert s not in text


@pytest.fixture
def cred_file(tmp_path: Path) -> Path:
    path = tmp_path / "creds.json"
    write_encrypted(
        path, {"binance": _creds(), "okx": _creds("okx")}, Secret(FILE_PASS), scrypt_n=FAST_N
    )
    return path


# ---------------------------------------------------------------- Secret


@settings(max_examples=200)
@given(value=st.text(min_size=1).filter(lambda v: v not in "Secret('***')"))
def test_secret_never_prints(value: str) -> None:
    s = Secret(value)
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", f"{s:>40}", "%s %r" % (s, s)):  # noqa: UP031
        assert value not in shown
    assert s.reveal() == value


def test_secret_equality_hash_and_pickling() -> None:
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    with pytest.raises(TypeError):
        hash(Secret("a"))
    with pytest.raises(CredentialsError, match="cannot be pickled"):
        pickle.dumps(Secret(SECRET))
    with pytest.raises(CredentialsError):
        copy.deepcopy(Secret(SECRET))
    with pytest.raises(CredentialsError, match="non-empty"):
        Secret("")


def test_credentials_repr_and_logging_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    c = _creds()
    _assert_clean(repr(c) + str(c) + f"{c}")
    log = logging.getLogger("order_kernel.test")
    with caplog.at_level(logging.DEBUG, logger="order_kernel.test"):
        log.info("loaded %s", c)
        log.info("key %r secret %s", c.api_key, c.api_secret)
        log.info("dict %s", {"creds": c})
    assert "binance" in caplog.text and "***" in caplog.text
    _assert_clean(caplog.text)
    assert c.ccxt_config() == {"apiKey": KEY, "secret": SECRET, "password": PHRASE}


# ---------------------------------------------------------------- environment


def test_from_env_reads_the_documented_names() -> None:
    assert env_names("binance-us") == (
        "STRATAGEM_BINANCE_US_API_KEY",
        "STRATAGEM_BINANCE_US_API_SECRET",
        "STRATAGEM_BINANCE_US_PASSPHRASE",
    )
    env = {"STRATAGEM_BINANCE_API_KEY": KEY, "STRATAGEM_BINANCE_API_SECRET": SECRET}
    c = from_env("binance", env)
    assert (c.api_key.reveal(), c.api_secret.reveal(), c.passphrase) == (KEY, SECRET, None)
    assert load("binance", env) == c


def test_missing_env_var_names_the_variable_not_the_values() -> None:
    env = {"STRATAGEM_BINANCE_API_KEY": KEY}
    with pytest.raises(CredentialsError) as info:
        from_env("binance", env)
    assert "STRATAGEM_BINANCE_API_SECRET" in str(info.value)
    _assert_clean(_text_of(info.value))


# ---------------------------------------------------------------- encrypted file


def test_encrypted_file_round_trip(cred_file: Path) -> None:
    env = {PASSPHRASE_ENV: FILE_PASS}
    c = from_encrypted_file(cred_file, "okx", env)
    assert c == _creds("okx")
    assert load("binance", env, file=cred_file) == _creds()
    raw = cred_file.read_text()
    _assert_clean(raw)  # nothing in clear text on disk, the passphrase included
    assert cred_file.stat().st_mode & 0o777 == 0o600


def test_salt_makes_files_differ(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for p, salt in ((a, b"\x01" * 16), (b, b"\x02" * 16)):
        write_encrypted(p, {"binance": _creds()}, Secret(FILE_PASS), salt=salt, scrypt_n=FAST_N)
    assert json.loads(a.read_text())["salt"] != json.loads(b.read_text())["salt"]


def _edit(path: Path, **fields: object) -> None:
    doc = json.loads(path.read_text())
    doc.update(fields)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("change", "env", "venue", "match"),
    [
        ({}, {PASSPHRASE_ENV: "wrong"}, "binance", "wrong passphrase in STRATAGEM_CREDENTIALS"),
        ({}, {}, "binance", "STRATAGEM_CREDENTIALS_PASSPHRASE.*unset"),
        ({}, {PASSPHRASE_ENV: FILE_PASS}, "kraken", r"no credentials for venue 'kraken'.*'okx'"),
        ({"format": "x"}, {PASSPHRASE_ENV: FILE_PASS}, "binance", r"\$\.format"),
        ({"n": 1024}, {PASSPHRASE_ENV: FILE_PASS}, "binance", r"\$\.n.*below"),
        ({"salt": "!!"}, {PASSPHRASE_ENV: FILE_PASS}, "binance", r"\$\.salt"),
        ({"token": "garbage"}, {PASSPHRASE_ENV: FILE_PASS}, "binance", "altered"),
    ],
)
def test_bad_file_or_passphrase_errors_leak_nothing(
    cred_file: Path, change: dict[str, object], env: dict[str, str], venue: str, match: str
) -> None:
    _edit(cred_file, **change)
    with pytest.raises(CredentialsError, match=match) as info:
        from_encrypted_file(cred_file, venue, env)
    assert str(cred_file) in str(info.value)
    _assert_clean(_text_of(info.value))


def test_undecodable_plaintext_is_not_quoted(tmp_path: Path) -> None:
    """A file whose decrypted body is not JSON (hand-made) must not echo the plaintext."""
    path = tmp_path / "c.json"
    write_encrypted(path, {"binance": _creds()}, Secret(FILE_PASS), scrypt_n=FAST_N)
    doc = json.loads(path.read_text())
    key = _derive(Secret(FILE_PASS), base64.b64decode(doc["salt"]), doc["n"], doc["r"], doc["p"])
    doc["token"] = Fernet(key).encrypt(f"not json {SECRET}".encode()).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(CredentialsError, match="not a JSON object") as info:
        from_encrypted_file(path, "binance", {PASSPHRASE_ENV: FILE_PASS})
    _assert_clean(_text_of(info.value))
    assert info.value.__context__ is None or SECRET not in repr(info.value.__context__)


def test_weak_kdf_is_refused_when_writing(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="power of two"):
        write_encrypted(tmp_path / "x", {}, Secret(FILE_PASS), scrypt_n=1000)
