"""Encrypted secrets store: settings and recipients' numbers encrypted at rest.

File: `B1TWILIO_SECRETS_FILE`, default `$XDG_CONFIG_HOME/b1twilio/secrets.enc` (`~/.config/...`).
Key: `B1TWILIO_SECRET_KEY` (32 random bytes, urlsafe base64, made by `b1twilio secrets generate-key`),
else the OS keyring (service `b1twilio`, user `secret-key`), else there is no store.

Why AES-256-GCM (not Fernet): the key is exactly the 32 random bytes the operator holds, used whole as a
256-bit AES key (Fernet splits it into two 128-bit halves), GCM authenticates the ciphertext and, as
associated data, the file header, so a wrong key or any modified byte is detected and never yields garbage.
A fresh random 96-bit nonce per write is safe: the file is rewritten a handful of times, not billions.

File layout: `B1TWSEC1` (format magic, also the AAD) + 12-byte nonce + ciphertext of a JSON object
`{"version": 1, "secrets": {NAME: value}}`.

Names are those of `core.settings.Settings` plus `PHONE_<REF>` for recipients whose rules file entry says
`phone_ref: <ref>`; `core.settings.check_storable` refuses anything else before it is written.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from b1twilio_pipeline.core.errors import ConfigurationError


class SecretsStoreError(ConfigurationError):
    """The store cannot be read or written (wrong key, modified file, bad key format)."""


__all__ = [
    "FILE_ENV",
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "KEY_ENV",
    "SecretsStore",
    "SecretsStoreError",
    "clear_cache",
    "configured_key",
    "default_path",
    "generate_key",
    "keyring_key",
    "parse_key",
    "read_secret",
    "read_secrets",
    "store_key_in_keyring",
    "store_path",
]

FILE_ENV = "B1TWILIO_SECRETS_FILE"
KEY_ENV = "B1TWILIO_SECRET_KEY"
KEYRING_SERVICE = "b1twilio"
KEYRING_USERNAME = "secret-key"
_MAGIC = b"B1TWSEC1"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEYRING_TTL_SECONDS = 30.0

_lock = threading.Lock()
_cache: dict[tuple[str, str], tuple[tuple[int, int, int], dict[str, str]]] = {}
_keyring_cache: tuple[float, str | None] | None = None


# --- keys ---------------------------------------------------------------------------------------------------


def generate_key() -> str:
    """A new random 256-bit key as urlsafe base64 text (what B1TWILIO_SECRET_KEY holds)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def parse_key(text: str, source: str = KEY_ENV) -> bytes:
    """The 32 key bytes from their urlsafe base64 text; a one-line error names where it came from."""
    cleaned = text.strip()
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        raw = base64.b64decode(cleaned, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SecretsStoreError(
            f"{source} is not a valid key: expected 32 bytes in urlsafe base64 (44 characters) as printed "
            "by `b1twilio secrets generate-key`"
        )
    return raw


def keyring_key() -> str | None:
    """The key text from the OS keyring, or None when there is none or the keyring does not work.
    Cached briefly: a keyring lookup can cost a D-Bus round trip and settings are read often."""
    global _keyring_cache
    now = time.monotonic()
    if _keyring_cache is not None and now - _keyring_cache[0] < _KEYRING_TTL_SECONDS:
        return _keyring_cache[1]
    value: str | None
    try:
        import keyring

        value = keyring.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
    except Exception:  # any backend failure (no D-Bus, locked, no backend) means "no key here"
        value = None
    _keyring_cache = (now, value or None)
    return value or None


def store_key_in_keyring(key_text: str) -> None:
    """Save the key in the OS keyring; a failure is a one-line error suggesting the variable instead."""
    global _keyring_cache
    parse_key(key_text, "the new key")
    try:
        import keyring

        keyring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, key_text)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SecretsStoreError(
            f"cannot store the key in the OS keyring ({reason}): export {KEY_ENV} instead"
        ) from None
    _keyring_cache = None


def configured_key() -> tuple[bytes, str] | None:
    """(key, where it came from) from B1TWILIO_SECRET_KEY, else the OS keyring; None when neither."""
    text = os.environ.get(KEY_ENV, "").strip()
    if text:
        return parse_key(text, KEY_ENV), KEY_ENV
    text = keyring_key() or ""
    if text:
        return parse_key(text, f"the key in the OS keyring ({KEYRING_SERVICE}/{KEYRING_USERNAME})"), "keyring"
    return None


# --- names -------------------------------------------------------------------------------------------------


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "b1twilio" / "secrets.enc"


def store_path() -> Path:
    """B1TWILIO_SECRETS_FILE, else the default path."""
    configured = os.environ.get(FILE_ENV, "").strip()
    return Path(configured).expanduser() if configured else default_path()


# --- the store ---------------------------------------------------------------------------------------------


class SecretsStore:
    """One encrypted file of name -> value. Reads are cached per file version; writes are atomic."""

    def __init__(self, path: str | Path, key: bytes | str) -> None:
        self.path = Path(path).expanduser()
        self.key = parse_key(key, "the key") if isinstance(key, str) else key
        if len(self.key) != 32:
            raise SecretsStoreError("the secrets store key must be 32 bytes")

    def exists(self) -> bool:
        return self.path.is_file()

    def get(self, name: str) -> str | None:
        return self._load().get(name)

    def names(self) -> list[str]:
        return sorted(self._load())

    def items(self) -> dict[str, str]:
        return dict(self._load())

    def set(self, name: str, value: str) -> None:
        with self._locked():
            data = self._load()
            data[name] = value
            self._write(data, self.key)

    def delete(self, name: str) -> bool:
        """Remove `name`; False when it was not stored."""
        with self._locked():
            data = self._load()
            if name not in data:
                return False
            del data[name]
            self._write(data, self.key)
            return True

    def rotate(self, new_key: bytes | str) -> None:
        """Re-encrypt everything under `new_key`; from then on only the new key opens the file."""
        key = parse_key(new_key, "the new key") if isinstance(new_key, str) else new_key
        with self._locked():
            data = self._load()
            self._write(data, key)
            self.key = key

    # internals

    def _load(self) -> dict[str, str]:
        """Decrypted content (a copy), from cache while the file is unchanged; {} when there is no file."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cache_key = (str(self.path.resolve()), hashlib.sha256(self.key).hexdigest())
        with _lock:
            cached = _cache.get(cache_key)
        if cached is not None and cached[0] == version:
            return dict(cached[1])
        data = self._decrypt(self.path.read_bytes())
        with _lock:
            _cache[cache_key] = (version, data)
        return dict(data)

    def _decrypt(self, blob: bytes) -> dict[str, str]:
        header = len(_MAGIC) + _NONCE_BYTES
        if len(blob) < header + _TAG_BYTES or not blob.startswith(_MAGIC):
            raise SecretsStoreError(
                f"cannot decrypt {self.path}: not a b1twilio secrets file (or the file was modified)"
            )
        try:
            plain = AESGCM(self.key).decrypt(blob[len(_MAGIC) : header], blob[header:], _MAGIC)
        except InvalidTag:
            raise SecretsStoreError(
                f"cannot decrypt {self.path}: wrong {KEY_ENV} or the file was modified"
            ) from None
        document = json.loads(plain.decode("utf-8"))
        secrets = document.get("secrets", {}) if isinstance(document, dict) else {}
        return {str(k): str(v) for k, v in secrets.items()}

    def _encrypt(self, data: dict[str, str], key: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps({"version": 1, "secrets": data}, sort_keys=True).encode("utf-8")
        return _MAGIC + nonce + AESGCM(key).encrypt(nonce, plain, _MAGIC)

    def _write(self, data: dict[str, str], key: bytes) -> None:
        """Temp file in the same directory, fsync, rename: readers see the old or the new file, never half."""
        blob = self._encrypt(data, key)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".secrets-", suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write between processes so two `secrets set` do not lose a value."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:  # not POSIX: single writer assumed
                pass
            yield
        finally:
            os.close(fd)


def read_secrets() -> dict[str, str]:
    """Everything in the encrypted store (decrypted once per file version), or {} when there is no store
    file. A store file without a key to open it, a wrong key or a modified file raise SecretsStoreError
    (a ConfigurationError): silently skipping the store would run a service on defaults (another
    database, say) while the operator's settings sit unread."""
    path = store_path()
    if not path.is_file():
        return {}
    key = configured_key()
    if key is None:
        raise SecretsStoreError(
            f"{path} holds settings but no key opens it here: export {KEY_ENV} in this service's environment "
            f"(or keep the key in the OS keyring), or point {FILE_ENV} elsewhere")
    return SecretsStore(path, key[0]).items()


def read_secret(name: str) -> str | None:
    """One value of the store (see `read_secrets`), or None when it is not there."""
    return read_secrets().get(name)


def clear_cache() -> None:
    """Forget decrypted content and the keyring lookup (tests, key changes in a long-lived process)."""
    global _keyring_cache
    with _lock:
        _cache.clear()
    _keyring_cache = None
