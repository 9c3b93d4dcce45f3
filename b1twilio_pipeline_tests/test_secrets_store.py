"""Encrypted secrets store: authenticated encryption, wrong key/tampering detected, rotation, and the
settings contract env -> store -> default."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError
from pydantic import SecretStr

from b1twilio_pipeline.core import secrets_store, settings
from b1twilio_pipeline.core.database import database_url
from b1twilio_pipeline.core.secrets_store import SecretsStore, SecretsStoreError, generate_key, read_secret
from b1twilio_pipeline.core.settings import ConfigurationError, current


class MemoryKeyring(KeyringBackend):
    """Stand-in for the OS keyring service (a third-party system, not our code)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.values.pop((service, username), None)


class BrokenKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringError("the keyring is locked")


@pytest.fixture(autouse=True)
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private store path, no key, an empty keyring; caches cleared around each test."""
    path = tmp_path / "cfg" / "secrets.enc"
    monkeypatch.setenv("B1TWILIO_SECRETS_FILE", str(path))
    monkeypatch.delenv("B1TWILIO_SECRET_KEY", raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    secrets_store.clear_cache()
    yield path
    keyring.set_keyring(previous)
    secrets_store.clear_cache()


def test_round_trip_and_ciphertext_hides_values(store_env: Path) -> None:
    key = generate_key()
    store = SecretsStore(store_env, key)
    store.set("B1_PASSWORD", "correct horse battery staple")
    store.set("PHONE_SAM", "+447700900123")
    assert store.get("B1_PASSWORD") == "correct horse battery staple"
    assert store.names() == ["B1_PASSWORD", "PHONE_SAM"]
    raw = store_env.read_bytes()
    for plain in (b"correct horse", b"B1_PASSWORD", b"447700900123", b"PHONE_SAM"):
        assert plain not in raw
    assert stat.S_IMODE(store_env.stat().st_mode) == 0o600
    assert [p.name for p in store_env.parent.iterdir() if p.name.endswith(".tmp")] == []
    reopened = SecretsStore(store_env, key)
    assert reopened.get("PHONE_SAM") == "+447700900123"
    assert reopened.delete("PHONE_SAM") is True and reopened.delete("PHONE_SAM") is False
    assert SecretsStore(store_env, key).names() == ["B1_PASSWORD"]


def test_each_write_uses_a_fresh_nonce(store_env: Path) -> None:
    store = SecretsStore(store_env, generate_key())
    store.set("B1_USERNAME", "manager")
    first = store_env.read_bytes()
    store.set("B1_USERNAME", "manager")
    assert store_env.read_bytes() != first


def test_wrong_key_is_a_clear_error_not_garbage(store_env: Path) -> None:
    SecretsStore(store_env, generate_key()).set("B1_PASSWORD", "s3cret-value")
    with pytest.raises(SecretsStoreError) as caught:
        SecretsStore(store_env, generate_key()).get("B1_PASSWORD")
    message = str(caught.value)
    assert message == f"cannot decrypt {store_env}: wrong B1TWILIO_SECRET_KEY or the file was modified"
    assert isinstance(caught.value, ConfigurationError)


@pytest.mark.parametrize("position", [0, 10, -1])
def test_any_modified_byte_is_detected(store_env: Path, position: int) -> None:
    key = generate_key()
    SecretsStore(store_env, key).set("TWILIO_AUTH_TOKEN", "token-0123456789")
    blob = bytearray(store_env.read_bytes())
    blob[position] ^= 0x01
    store_env.write_bytes(bytes(blob))
    with pytest.raises(SecretsStoreError) as caught:
        SecretsStore(store_env, key).get("TWILIO_AUTH_TOKEN")
    assert "the file was modified" in str(caught.value) and "token" not in str(caught.value)


def test_rotate_reencrypts_for_the_new_key_only(store_env: Path) -> None:
    old, new = generate_key(), generate_key()
    store = SecretsStore(store_env, old)
    store.set("B1_PASSWORD", "pw-1")
    store.set("PHONE_SAM", "+447700900123")
    store.rotate(new)
    assert SecretsStore(store_env, new).items() == {"B1_PASSWORD": "pw-1", "PHONE_SAM": "+447700900123"}
    with pytest.raises(SecretsStoreError):
        SecretsStore(store_env, old).get("B1_PASSWORD")
    store.set("B1_USERNAME", "manager")  # the instance now writes with the new key
    assert SecretsStore(store_env, new).get("B1_USERNAME") == "manager"


@pytest.mark.parametrize("bad", ["abc", "x" * 44, generate_key()[:-8], "not base64!!" * 4])
def test_malformed_key_is_a_one_line_error(
    bad: str, store_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SecretsStore(store_env, generate_key()).set("B1_PASSWORD", "pw")
    monkeypatch.setenv("B1TWILIO_SECRET_KEY", bad)
    with pytest.raises(SecretsStoreError) as caught:
        read_secret("B1_PASSWORD")
    assert "B1TWILIO_SECRET_KEY is not a valid key" in str(caught.value)
    assert bad not in str(caught.value)


def test_read_secret_none_without_file_key_or_name(store_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("B1TWILIO_SECRET_KEY", key)
    assert read_secret("B1_PASSWORD") is None  # no file yet
    SecretsStore(store_env, key).set("B1_PASSWORD", "pw")
    assert read_secret("B1_PASSWORD") == "pw"
    assert read_secret("B1_USERNAME") is None  # not stored
    monkeypatch.delenv("B1TWILIO_SECRET_KEY")
    with pytest.raises(SecretsStoreError, match="holds settings but no key opens it here: export "
                                                "B1TWILIO_SECRET_KEY"):
        read_secret("B1_PASSWORD")  # a store nobody can open is an error, not "no settings"


def test_key_from_keyring_when_env_unset(store_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    SecretsStore(store_env, key).set("B1_COMPANY_DB", "SBODEMOUS")
    secrets_store.store_key_in_keyring(key)
    assert keyring.get_password("b1twilio", "secret-key") == key
    assert secrets_store.configured_key() == (secrets_store.parse_key(key), "keyring")
    assert read_secret("B1_COMPANY_DB") == "SBODEMOUS"
    monkeypatch.setenv("B1TWILIO_SECRET_KEY", generate_key())  # the variable wins over the keyring
    with pytest.raises(SecretsStoreError):
        read_secret("B1_COMPANY_DB")


def test_failing_keyring_means_no_key(store_env: Path) -> None:
    SecretsStore(store_env, generate_key()).set("B1_COMPANY_DB", "SBODEMOUS")
    keyring.set_keyring(BrokenKeyring())
    secrets_store.clear_cache()
    assert secrets_store.configured_key() is None
    with pytest.raises(SecretsStoreError, match="no key opens it"):
        read_secret("B1_COMPANY_DB")


def test_a_store_without_its_key_stops_settings_instead_of_falling_back(store_env: Path) -> None:
    """A worker started without the key used to run on the SQLite default while the receiver, with the key,
    wrote to PostgreSQL: two ledgers. Now the worker refuses to start, saying why."""
    key = generate_key()
    SecretsStore(store_env, key).set("B1TWILIO_DATABASE_URL", "postgresql://b1twilio@db/b1twilio")
    with pytest.raises(SecretsStoreError, match="export B1TWILIO_SECRET_KEY"):
        database_url()


def test_settings_env_over_store_over_default(store_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("B1TWILIO_SECRET_KEY", key)
    monkeypatch.delenv("B1_COMPANY_DB", raising=False)
    store = SecretsStore(store_env, key)
    monkeypatch.delenv("B1TWILIO_ADMIN_GROUP", raising=False)
    assert current().b1_company_db is None
    with pytest.raises(ConfigurationError, match=r"B1_COMPANY_DB is not set: .*b1twilio secrets set B1_COMPANY_DB"):
        current().require("b1_company_db", "login")
    assert current().b1twilio_admin_group == "admins"
    store.set("B1_COMPANY_DB", "STOREDDB")
    store.set("B1TWILIO_ADMIN_GROUP", "ops")
    assert current().b1_company_db == "STOREDDB"
    assert current().require("b1_company_db", "login") == "STOREDDB"
    assert current().b1twilio_admin_group == "ops"
    monkeypatch.setenv("B1_COMPANY_DB", "ENVDB")
    assert current().b1_company_db == "ENVDB"
    monkeypatch.setenv("B1_COMPANY_DB", "")  # empty counts as unset
    assert current().b1_company_db == "STOREDDB"
    assert current(b1_company_db="GIVEN").b1_company_db == "GIVEN"  # resource config wins
    monkeypatch.delenv("B1_COMPANY_DB")
    store.delete("B1_COMPANY_DB")
    assert current().b1_company_db is None
    assert current() is current()  # built once while nothing it is built from changes (sensors ask often)


def test_a_bad_setting_is_one_line_naming_it_without_echoing_secrets(
        store_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("B1TWILIO_SECRET_KEY", key)
    monkeypatch.setenv("B1TWILIO_SEND_MAX_ATTEMPTS", "many")
    with pytest.raises(ConfigurationError) as bad_int:
        current()
    assert str(bad_int.value).startswith("B1TWILIO_SEND_MAX_ATTEMPTS='many' is not valid: input should be")
    monkeypatch.setenv("B1TWILIO_SEND_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigurationError, match="B1TWILIO_SEND_MAX_ATTEMPTS='0' is not valid: input should be "
                                                 "greater than or equal to 1"):
        current()
    monkeypatch.delenv("B1TWILIO_SEND_MAX_ATTEMPTS")
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+44 7700 900123")
    with pytest.raises(ConfigurationError) as bad_phone:
        current()
    assert "TWILIO_FROM_NUMBER=" in str(bad_phone.value) and "E.164" in str(bad_phone.value)
    assert "7700 900123" not in str(bad_phone.value)  # masked
    monkeypatch.delenv("TWILIO_FROM_NUMBER")
    # A value from the store goes through the same checks, and a secret's value is never shown.
    SecretsStore(store_env, key).set("TWILIO_ACCOUNT_SID", "hunter2-not-a-sid")
    with pytest.raises(ConfigurationError) as bad_sid:
        current()
    assert "TWILIO_ACCOUNT_SID='hunter2-not-a-sid' must look like AC followed by 32 hex digits" in str(bad_sid.value)
    assert "\n" not in str(bad_sid.value)
    assert settings.Settings.names_of(SecretStr) == ("B1_PASSWORD", "B1_WEBHOOK_PASSWORD", "TWILIO_AUTH_TOKEN",
                                                     "TWILIO_API_SECRET")


def test_decrypted_content_is_cached_per_file_version(
    store_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    monkeypatch.setenv("B1TWILIO_SECRET_KEY", key)
    SecretsStore(store_env, key).set("B1_USERNAME", "manager")
    assert read_secret("B1_USERNAME") == "manager"
    before = store_env.stat()
    # Corrupt the bytes in place but keep inode, size and mtime: the cached content is still served...
    with open(store_env, "r+b") as handle:
        handle.write(b"\x00" * before.st_size)
    os.utime(store_env, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert read_secret("B1_USERNAME") == "manager"
    # ...and a new modification time makes it read (and here reject) the file again.
    os.utime(store_env, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    with pytest.raises(SecretsStoreError):
        read_secret("B1_USERNAME")


def test_entry_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    settings.check_storable("PHONE_SAM", "+447700900123")
    settings.check_storable("TWILIO_AUTH_TOKEN", "abc")
    settings.check_storable("B1TWILIO_TIMEZONE", "Europe/Berlin")
    settings.check_storable("MY_OWN", "x", allow_unknown=True)
    cases = {
        ("PHONE_SAM", "+44 7700 900123"): "E.164",
        ("TWILIO_FROM_NUMBER", "0044123"): "E.164",
        ("B1_PASWORD", "x"): "not a setting the pipeline reads",
        ("b1_password", "x"): "not a setting name",
        ("B1TWILIO_SECRET_KEY", "x"): "cannot be kept in the store",
        ("B1_PASSWORD", ""): "empty",
    }
    for (name, value), expected in cases.items():
        with pytest.raises(SecretsStoreError) as caught:
            settings.check_storable(name, value)
        assert expected in str(caught.value)
        if value.startswith(("+44", "0044")):
            assert value not in str(caught.value)
