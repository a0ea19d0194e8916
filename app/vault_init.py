"""Initialize and unseal a new Vault or OpenBao server for a demo deployment.

Run as ``python -m app.vault_init`` before ``python -m app.vault_bootstrap``, as
docker-compose.vault.yml does. Through the HTTP API it waits until the server
responds. A server that is not initialized gets a single unseal key, its root
token is written to ``--root-token-file`` (mode 0600), and it is unsealed. The
unseal key is kept in memory only, because the demo server
stores its data in memory and loses it, initialization included, when it stops.

A single key share and a root token on disk are for demos only. Initialize a
real Vault with ``operator init`` and its usual key shares, and give the
bootstrap an admin token for its one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from app.vault_bootstrap import write_private_file

log = logging.getLogger(__name__)

RETRY_INTERVAL_SECONDS = 1.0


class InitError(Exception):
    """Raised when the server cannot be reached, initialized or unsealed."""


def make_client(vault_addr: str, timeout: float) -> hvac.Client:
    # No proxy, ~/.netrc or redirect may send the root token elsewhere.
    session = requests.Session()
    session.trust_env = False

    return hvac.Client(
        url=vault_addr,
        token="",
        timeout=timeout,
        session=session,
        allow_redirects=False,
    )


def wait_for_seal_status(client: hvac.Client, wait_seconds: float) -> dict[str, Any]:
    """Return the server's seal status, retrying until it responds or time runs out."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            status: dict[str, Any] = client.sys.read_seal_status()
            return status
        except (requests.RequestException, hvac.exceptions.VaultError) as error:
            if time.monotonic() >= deadline:
                message = (
                    f"vault at {client.url} did not respond to sys/seal-status within "
                    f"{wait_seconds:.0f} s: {type(error).__name__}. Check "
                    "--vault-addr and that the server is running"
                )
                raise InitError(message) from None

            log.info(
                "waiting for vault addr=%s error=%s", client.url, type(error).__name__
            )
            time.sleep(RETRY_INTERVAL_SECONDS)


def initialize(client: hvac.Client, root_token_file: Path) -> None:
    """Initialize the server with one key share, store the root token, unseal it."""
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    write_private_file(root_token_file, result["root_token"] + "\n")
    log.info("vault initialized root_token_file=%s", root_token_file)
    unsealed = client.sys.submit_unseal_key(result["keys_base64"][0])
    if unsealed["sealed"]:
        message = f"vault at {client.url} is still sealed after its unseal key"
        raise InitError(message)

    log.info("vault unsealed addr=%s", client.url)


def check_initialized(
    client: hvac.Client, status: dict[str, Any], root_token_file: Path
) -> None:
    """Raise InitError unless an initialized server is usable with the token file."""
    if status["sealed"]:
        message = (
            f"vault at {client.url} is initialized but sealed, and this helper "
            "keeps no unseal key. Unseal it with the key from its initialization"
        )
        raise InitError(message)

    if not root_token_file.is_file() or root_token_file.stat().st_size == 0:
        message = (
            f"vault at {client.url} is already initialized, but "
            f"{root_token_file} contains no root token. Pass the file that the "
            "first run wrote, or restart the demo server to start afresh"
        )
        raise InitError(message)

    log.info("vault already initialized addr=%s", client.url)


def run(vault_addr: str, root_token_file: Path, wait_seconds: float) -> None:
    client = make_client(vault_addr, timeout=10)
    status = wait_for_seal_status(client, wait_seconds)
    try:
        if status["initialized"]:
            check_initialized(client, status, root_token_file)
        else:
            initialize(client, root_token_file)
    except (requests.RequestException, hvac.exceptions.VaultError) as error:
        # The message of a failed request could repeat the unseal key.
        message = f"initializing vault at {vault_addr} failed: {type(error).__name__}"
        raise InitError(message) from None
    except OSError as error:
        message = f"failed to write {root_token_file}: {error.strerror}"
        raise InitError(message) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.vault_init",
        description=(
            "Initialize and unseal a new Vault or OpenBao demo server with one "
            "unseal key, and write its root token to a file. Not for production."
        ),
    )
    parser.add_argument(
        "--vault-addr",
        default=os.environ.get("VAULT_ADDR"),
        help="Vault address, such as http://vault:8200 (default: $VAULT_ADDR)",
    )
    parser.add_argument(
        "--root-token-file",
        type=Path,
        required=True,
        help="file the root token is written to (mode 0600) on initialization, "
        "and that must contain it when the server is already initialized",
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=60.0,
        help="how long to wait for the server to respond, in seconds (default: 60)",
    )

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the initialization and return 0 on success, or 1 after logging the error."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    args = build_parser().parse_args(argv)
    if not args.vault_addr:
        log.error("vault init failed: missing --vault-addr (or $VAULT_ADDR)")
        return 1

    try:
        run(args.vault_addr, args.root_token_file, args.wait_seconds)
    except InitError as error:
        log.error("vault init failed: %s", error)
        return 1

    return 0


if __name__ == "__main__":
    sys.exit(main())
