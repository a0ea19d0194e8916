"""Helpers for the `config` tests: secret files, .env files, Vault data, loads.

Every load passes an explicit `environ` whose SECRETS_DIR and DOTENV_PATH point
under the test's `tmp_path`, so no test reads /run/secrets or a real .env.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
import requests

import config
from tests.support.servers import BaoServer


class Layout:
    """Paths of one test's secrets directory and .env file, and writers for them."""

    def __init__(self, root: Path) -> None:
        self.secrets_dir = root / "secrets"
        self.dotenv_path = root / "app.env"

    def environ(self, **variables: str) -> dict[str, str]:
        """Return an environ for `load_settings` that points at this layout."""
        return {
            "SECRETS_DIR": str(self.secrets_dir),
            "DOTENV_PATH": str(self.dotenv_path),
            **variables,
        }

    def secret_file(self, name: str, content: str | bytes) -> Path:
        """Write `content` byte for byte to the secret file `name`."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        path = self.secrets_dir / name
        data = content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
        return path

    def dotenv(self, text: str) -> Path:
        """Write `text` byte for byte as the .env file, without newline translation."""
        self.dotenv_path.write_bytes(text.encode())
        return self.dotenv_path


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


def load(environ: dict[str, str]) -> config.Settings:
    return config.load_settings(environ=environ)


def load_error(environ: dict[str, str]) -> config.SettingsError:
    """Load `environ`, expecting it to fail, and return the error."""
    with pytest.raises(config.SettingsError) as raised:
        config.load_settings(environ=environ)
    return raised.value


def problem_for(error: config.SettingsError, setting: str | None) -> str:
    """Return the text of the only problem of `error` about `setting`."""
    matching = [str(p) for p in error.problems if p.setting == setting]
    assert len(matching) == 1, f"expected one problem for {setting}: {error}"
    return matching[0]


REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m config ARGS` with only `environ` and what Python needs."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "config", *args],
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


class VaultData:
    """A KV v2 path of its own on the shared OpenBao server, for one test."""

    def __init__(self, server: BaoServer, path: str) -> None:
        self.server = server
        self.mount = "secret"
        self.path = path
        self.token = secrets.token_urlsafe(18)
        # A token of the test's own, so that the root token appears nowhere.
        server.client().auth.token.create(id=self.token, policies=["root"], ttl="10m")

    def write(self, **values: str) -> int:
        """Replace the data at the path and return the new version number."""
        response = self.server.client().secrets.kv.v2.create_or_update_secret(
            path=self.path, secret=values, mount_point=self.mount
        )
        return int(response["data"]["version"])

    def environ(self, **variables: str) -> dict[str, str]:
        """Return the Vault settings that read this path with this token."""
        return {
            "VAULT_ADDR": self.server.addr,
            "VAULT_TOKEN": self.token,
            "VAULT_KV_PATH": self.path,
            "VAULT_RETRY_SECONDS": "1",
            **variables,
        }


@pytest.fixture
def vault(bao_server: BaoServer, request: pytest.FixtureRequest) -> VaultData:
    """A fresh KV v2 path on the shared server, named after the test."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)
    path = f"tests/{name}-{secrets.token_hex(3)}"
    return VaultData(bao_server, path)


class AuditedBaoServer(BaoServer):
    """An OpenBao dev server that writes every request to a file audit device.

    OpenBao 2.7 rejects `sys/audit` requests and asks for "declarative,
    config-based audit device management", so the device is declared in a
    file given to -config.
    """

    @property
    def audit_log(self) -> Path:
        return self.directory / "audit.log"

    def argv(self) -> list[str]:
        config_file = self.directory / "audit.hcl"
        config_file.write_text(
            'audit "file" "requests" {\n'
            f'  options {{\n    file_path = "{self.audit_log}"\n  }}\n'
            "}\n"
        )
        return [*super().argv(), f"-config={config_file}"]

    def request_paths(self) -> list[str]:
        """Return the path of every request audited so far, in order."""
        if not self.audit_log.exists():
            return []
        entries = [json.loads(line) for line in self.audit_log.read_text().splitlines()]
        return [e["request"]["path"] for e in entries if e["type"] == "request"]


@pytest.fixture
def audited_bao_server(tmp_path: Path) -> Iterator[AuditedBaoServer]:
    server = AuditedBaoServer(tmp_path / "bao-audited")
    server.start()
    yield server
    server.stop()


class TlsBaoServer(BaoServer):
    """An OpenBao dev server that serves HTTPS with a CA it generates (`-dev-tls`)."""

    @property
    def tls_dir(self) -> Path:
        return self.directory / "tls"

    @property
    def ca_path(self) -> Path:
        return self.tls_dir / "vault-ca.pem"

    @property
    def addr(self) -> str:
        return f"https://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        self.tls_dir.mkdir(exist_ok=True)
        return [*super().argv(), "-dev-tls", f"-dev-tls-cert-dir={self.tls_dir}"]

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(
            url=self.addr,
            token=self.root_token if token is None else token,
            verify=str(self.ca_path),
            timeout=10,
        )

    def healthy(self) -> bool:
        if not self.ca_path.is_file():
            return False
        try:
            response = requests.get(
                f"{self.addr}/v1/sys/health", verify=str(self.ca_path), timeout=2
            )
        except requests.ConnectionError:
            return False

        return response.status_code == 200


@pytest.fixture
def tls_bao_server(tmp_path: Path) -> Iterator[TlsBaoServer]:
    server = TlsBaoServer(tmp_path / "bao-tls")
    server.start()
    yield server
    server.stop()
