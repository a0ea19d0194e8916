"""Configure Vault or OpenBao to issue the hit counter's Redis credentials.

Run as ``python -m app.vault_bootstrap``. Through the HTTP API (hvac), which
HashiCorp Vault and OpenBao share, it sets up:

1. the database secrets engine at ``--db-mount``,
2. a Redis connection at ``<mount>/config/<connection>`` using the Redis admin user,
3. a role at ``<mount>/roles/<role>`` whose Redis users may only run INCR,
   INCRBY and GET on the counter key, and PING,
4. a policy that lets a token read ``<mount>/creds/<role>``, renew and revoke
   those leases, and renew and look up itself,
5. an AppRole role with that policy, whose role id goes to stdout and whose
   secret id goes to ``--secret-id-file`` (mode 0600).

Each step reads the current state first and writes only what differs, so a
second run reports every step as unchanged. Progress goes to stderr. Secrets
(the Vault token, the Redis admin password, the secret id) are read from files
or the environment, never from the command line, and never printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import hvac
import hvac.exceptions
import requests

log = logging.getLogger(__name__)

Change = Literal["created", "updated", "unchanged"]
Step = Callable[[hvac.Client, "Options"], Change]
T = TypeVar("T")

PLUGIN_NAME = "redis-database-plugin"
# redis-py's incr() sends INCRBY, and the /readyz check sends PING. GET lets an
# operator read the counter with the same credentials. Vault's Redis plugin
# prefixes these rules with "resetchannels -@all", so nothing else is allowed
# (checked with OpenBao 2.7 and Redis 7.0).
COUNTER_COMMANDS = ("+incr", "+incrby", "+get", "+ping")


class BootstrapError(Exception):
    """Raised when an option is invalid or a bootstrap step fails."""


@dataclass(frozen=True)
class Options:
    """Validated command-line options, with the secrets already read."""

    vault_addr: str
    vault_token: str
    vault_cacert: str | None
    vault_namespace: str | None
    redis_host: str
    redis_port: int
    redis_admin_username: str
    redis_admin_password: str
    redis_tls: bool
    redis_ca_cert: str | None
    db_mount: str
    db_connection: str
    role: str
    counter_key: str
    default_ttl: int
    max_ttl: int
    policy: str
    approle_mount: str
    approle_role: str
    token_ttl: int
    token_max_ttl: int
    secret_id_file: Path | None
    secret_id_ttl: int
    rotate_secret_id: bool
    update_admin_password: bool

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values that must never appear in output."""
        return (self.vault_token, self.redis_admin_password)


def creation_statements(counter_key: str) -> list[str]:
    """Return the Redis ACL rules for the role's users: the counter key only."""
    return [*COUNTER_COMMANDS, f"~{counter_key}"]


def render_policy(options: Options) -> str:
    """Return the HCL of the least-privilege policy for the hit counter."""
    creds = f"{options.db_mount}/creds/{options.role}"
    # Policies match only the request path. hvac 2.4's renew_lease sends the
    # lease id in the body to sys/leases/renew, so that path is allowed. Revoking
    # is allowed only with the lease id in the path (PUT
    # sys/leases/revoke/<lease id>, not hvac's revoke_lease), so this token
    # cannot revoke leases of other roles.
    rules = {
        creds: "read",
        "sys/leases/renew": "update",
        f"sys/leases/renew/{creds}/*": "update",
        f"sys/leases/revoke/{creds}/*": "update",
        "auth/token/renew-self": "update",
        "auth/token/lookup-self": "read",
        "auth/token/revoke-self": "update",
        # Lets the service check at startup that it may read the creds path.
        "sys/capabilities-self": "update",
    }
    blocks = [
        f'path "{path}" {{\n  capabilities = ["{capability}"]\n}}\n'
        for path, capability in rules.items()
    ]
    header = "# Written by python -m app.vault_bootstrap, which replaces edits.\n"

    return header + "\n".join(blocks)


def ensure_database_mount(client: hvac.Client, options: Options) -> Change:
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    existing = mounts.get(f"{options.db_mount}/")
    if existing is None:
        client.sys.enable_secrets_engine("database", path=options.db_mount)
        return "created"

    if existing["type"] != "database":
        message = (
            f"mount {options.db_mount}/ exists with type {existing['type']!r}, "
            "expected 'database'. Choose another path with --db-mount"
        )
        raise BootstrapError(message)

    return "unchanged"


def connection_details(options: Options) -> dict[str, Any]:
    """Return the plugin's connection fields that Vault reads back (no password).

    NOTE: the tests run Redis without TLS, so the TLS fields are passed to the
    plugin unverified.
    """
    details: dict[str, Any] = {
        "host": options.redis_host,
        "port": options.redis_port,
        "username": options.redis_admin_username,
        "tls": options.redis_tls,
    }
    if options.redis_ca_cert is not None:
        details["ca_cert"] = options.redis_ca_cert

    return details


def ensure_connection(client: hvac.Client, options: Options) -> Change:
    database = client.secrets.database
    desired = connection_details(options)
    try:
        current = database.read_connection(
            options.db_connection, mount_point=options.db_mount
        )["data"]
    except hvac.exceptions.InvalidPath:
        current = None

    allowed_roles = [options.role]
    change: Change = "created"
    if current is not None:
        # Keep roles that other tools allowed on this connection.
        allowed_roles = sorted({*current.get("allowed_roles", []), options.role})
        details = current.get("connection_details", {})
        same = all(details.get(key) == value for key, value in desired.items())
        same = same and (details.get("ca_cert") or None) == options.redis_ca_cert
        if (
            same
            and current.get("plugin_name") == PLUGIN_NAME
            and options.role in current.get("allowed_roles", [])
            and not options.update_admin_password
        ):
            # Vault never returns the stored password, so an unchanged
            # connection keeps it. --update-admin-password writes it again.
            return "unchanged"
        change = "updated"

    # Vault connects to Redis with these credentials before it stores them.
    database.configure(
        name=options.db_connection,
        plugin_name=PLUGIN_NAME,
        allowed_roles=allowed_roles,
        verify_connection=True,
        mount_point=options.db_mount,
        password=options.redis_admin_password,
        **desired,
    )

    return change


def ensure_role(client: hvac.Client, options: Options) -> Change:
    database = client.secrets.database
    desired = {
        "db_name": options.db_connection,
        "creation_statements": creation_statements(options.counter_key),
        "default_ttl": options.default_ttl,
        "max_ttl": options.max_ttl,
    }
    try:
        current = database.read_role(options.role, mount_point=options.db_mount)
    except hvac.exceptions.InvalidPath:
        current = None

    if current is not None and _matches(current["data"], desired):
        return "unchanged"

    database.create_role(name=options.role, mount_point=options.db_mount, **desired)

    return "created" if current is None else "updated"


def ensure_policy(client: hvac.Client, options: Options) -> Change:
    desired = render_policy(options)
    try:
        current = client.sys.read_policy(options.policy)["data"]["rules"]
    except hvac.exceptions.InvalidPath:
        current = None

    if current == desired:
        return "unchanged"

    client.sys.create_or_update_policy(options.policy, desired)

    return "created" if current is None else "updated"


def ensure_approle_auth(client: hvac.Client, options: Options) -> Change:
    methods = client.sys.list_auth_methods()["data"]
    existing = methods.get(f"{options.approle_mount}/")
    if existing is None:
        client.sys.enable_auth_method("approle", path=options.approle_mount)
        return "created"

    if existing["type"] != "approle":
        message = (
            f"auth mount {options.approle_mount}/ exists with type "
            f"{existing['type']!r}, expected 'approle'. Choose another path "
            "with --approle-mount"
        )
        raise BootstrapError(message)

    return "unchanged"


def ensure_approle_role(client: hvac.Client, options: Options) -> Change:
    approle = client.auth.approle
    # Without the default policy the token can do only what render_policy lists.
    desired = {
        "token_policies": [options.policy],
        "token_ttl": options.token_ttl,
        "token_max_ttl": options.token_max_ttl,
        "token_no_default_policy": True,
        "secret_id_ttl": options.secret_id_ttl,
        "bind_secret_id": True,
    }
    try:
        current = approle.read_role(
            options.approle_role, mount_point=options.approle_mount
        )
    except hvac.exceptions.InvalidPath:
        current = None

    if current is not None and _matches(current["data"], desired):
        return "unchanged"

    approle.create_or_update_approle(
        options.approle_role, mount_point=options.approle_mount, **desired
    )

    return "created" if current is None else "updated"


def read_role_id(client: hvac.Client, options: Options) -> str:
    response = client.auth.approle.read_role_id(
        options.approle_role, mount_point=options.approle_mount
    )

    return str(response["data"]["role_id"])


def ensure_secret_id(client: hvac.Client, options: Options) -> Change:
    """Write a new secret id to --secret-id-file unless the one there is valid."""
    path = options.secret_id_file
    if path is None:
        message = "no --secret-id-file given"
        raise BootstrapError(message)

    approle = client.auth.approle
    current = _read_optional_secret(path)
    if current is not None and not options.rotate_secret_id:
        # A valid secret id returns its metadata; an unknown one returns 204.
        lookup = approle.read_secret_id(
            options.approle_role, current, mount_point=options.approle_mount
        )
        if isinstance(lookup, dict) and lookup.get("data"):
            return "unchanged"

    response = approle.generate_secret_id(
        options.approle_role, mount_point=options.approle_mount
    )
    write_private_file(path, response["data"]["secret_id"] + "\n")
    if current is None:
        return "created"

    # Destroying an unknown secret id succeeds, so this needs no lookup first.
    approle.destroy_secret_id(
        options.approle_role, current, mount_point=options.approle_mount
    )

    return "updated"


def write_private_file(path: Path, text: str) -> None:
    """Replace `path` atomically with a file of mode 0600 containing `text`."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_optional_secret(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None

    return text or None


def _matches(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    return all(current.get(key) == value for key, value in desired.items())


def redact(text: str, secrets: Sequence[str]) -> str:
    """Return `text` with every non-empty value of `secrets` masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")

    return text


def run_step(
    description: str, path: str, action: Callable[[], T], options: Options
) -> T:
    """Run one step and turn client errors into a BootstrapError naming the step."""
    try:
        return action()
    except hvac.exceptions.VaultError as error:
        reason = redact(str(error), options.secrets)
        message = f"{description} failed at {path}: {type(error).__name__}: {reason}"
    except requests.RequestException as error:
        reason = redact(str(error), options.secrets)
        message = (
            f"{description} failed at {path}: failed to connect to "
            f"{options.vault_addr} ({type(error).__name__}: {reason}). "
            "Check --vault-addr or VAULT_ADDR"
        )
    except OSError as error:
        # requests raises a bare OSError, with no strerror, for a bad CA path.
        reason = error.strerror or str(error)
        where = f": {error.filename}" if error.filename else ""
        message = f"{description} failed at {path}: {reason}{where}"

    raise BootstrapError(message)


def bootstrap(client: hvac.Client, options: Options) -> tuple[str, list[Change]]:
    """Apply every step in order and return the role id and each step's change."""
    mount, approle = options.db_mount, options.approle_mount
    approle_role = f"auth/{approle}/role/{options.approle_role}"
    steps: list[tuple[str, str, Step]] = [
        ("database secrets engine", f"sys/mounts/{mount}", ensure_database_mount),
        (
            "redis connection",
            f"{mount}/config/{options.db_connection}",
            ensure_connection,
        ),
        ("database role", f"{mount}/roles/{options.role}", ensure_role),
        ("policy", f"sys/policy/{options.policy}", ensure_policy),
        ("approle auth method", f"sys/auth/{approle}", ensure_approle_auth),
        ("approle role", approle_role, ensure_approle_role),
    ]
    if options.secret_id_file is not None:
        steps.append(("secret id", f"{approle_role}/secret-id", ensure_secret_id))

    run_step(
        "vault token lookup",
        "auth/token/lookup-self",
        client.auth.token.lookup_self,
        options,
    )
    changes = []
    for description, path, step in steps:
        change = run_step(description, path, partial(step, client, options), options)
        log.info("%s %s path=%s", change, description, path)
        changes.append(change)

    role_id = run_step(
        "role id",
        f"{approle_role}/role-id",
        partial(read_role_id, client, options),
        options,
    )

    return role_id, changes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.vault_bootstrap",
        description=(
            "Configure Vault or OpenBao to issue the hit counter's Redis "
            "credentials. Prints the AppRole role id on stdout."
        ),
    )
    env = os.environ.get
    vault = parser.add_argument_group("vault")
    vault.add_argument(
        "--vault-addr",
        default=env("VAULT_ADDR"),
        help="Vault address, such as https://vault:8200 (default: $VAULT_ADDR)",
    )
    vault.add_argument(
        "--vault-token-file",
        type=Path,
        help="file containing a Vault token allowed to configure mounts, "
        "policies and auth methods (default: the token in $VAULT_TOKEN)",
    )
    vault.add_argument(
        "--vault-cacert",
        default=env("VAULT_CACERT"),
        help="CA bundle that signs Vault's TLS certificate (default: $VAULT_CACERT)",
    )
    vault.add_argument(
        "--vault-namespace",
        default=env("VAULT_NAMESPACE"),
        help="Vault Enterprise namespace (default: $VAULT_NAMESPACE)",
    )

    redis = parser.add_argument_group("redis, as Vault reaches it")
    redis.add_argument(
        "--redis-host",
        default=env("REDIS_HOST"),
        help="Redis host name or address (default: $REDIS_HOST)",
    )
    redis.add_argument(
        "--redis-port",
        default=env("REDIS_PORT", "6379"),
        help="Redis TCP port (default: $REDIS_PORT or 6379)",
    )
    redis.add_argument(
        "--redis-admin-username",
        default="default",
        help="Redis user that Vault logs in as to create and delete users, "
        "which needs the ACL command (default: default)",
    )
    redis.add_argument(
        "--redis-admin-password-file",
        type=Path,
        default=env("REDIS_ADMIN_PASSWORD_FILE"),
        help="file containing that user's password "
        "(default: $REDIS_ADMIN_PASSWORD_FILE)",
    )
    redis.add_argument(
        "--redis-tls",
        action="store_true",
        help="make Vault connect to Redis over TLS (default: off)",
    )
    redis.add_argument(
        "--redis-ca-cert-file",
        type=Path,
        help="PEM file of the CA that signs Redis's certificate, for --redis-tls",
    )
    redis.add_argument(
        "--update-admin-password",
        action="store_true",
        help="write the connection again even if unchanged, for example after "
        "the admin password changed (Vault never returns the stored one)",
    )

    database = parser.add_argument_group("database secrets engine")
    database.add_argument(
        "--db-mount",
        default=env("VAULT_DB_MOUNT", "database"),
        help="mount path of the engine (default: $VAULT_DB_MOUNT or database)",
    )
    database.add_argument(
        "--db-connection",
        default="redis",
        help="name of the connection under <mount>/config/ (default: redis)",
    )
    database.add_argument(
        "--role",
        default=env("VAULT_DB_ROLE", "hitcounter"),
        help="role under <mount>/roles/ (default: $VAULT_DB_ROLE or hitcounter)",
    )
    database.add_argument(
        "--counter-key",
        default=env("COUNTER_KEY", "hits"),
        help="the only Redis key the role's users may touch "
        "(default: $COUNTER_KEY or hits)",
    )
    database.add_argument(
        "--default-ttl",
        type=int,
        default=3600,
        help="lease time of new credentials, in seconds (default: 3600)",
    )
    database.add_argument(
        "--max-ttl",
        type=int,
        default=86400,
        help="maximum lease time after renewals, in seconds (default: 86400)",
    )

    approle = parser.add_argument_group("approle")
    approle.add_argument(
        "--policy",
        default="hitcounter",
        help="name of the policy to write (default: hitcounter)",
    )
    approle.add_argument(
        "--approle-mount",
        default=env("VAULT_APPROLE_MOUNT", "approle"),
        help="mount path of the AppRole auth method "
        "(default: $VAULT_APPROLE_MOUNT or approle)",
    )
    approle.add_argument(
        "--approle-role",
        default="hitcounter",
        help="AppRole role name (default: hitcounter)",
    )
    approle.add_argument(
        "--token-ttl",
        type=int,
        default=3600,
        help="lifetime of login tokens, in seconds (default: 3600)",
    )
    approle.add_argument(
        "--token-max-ttl",
        type=int,
        default=86400,
        help="maximum lifetime of login tokens after renewals, in seconds "
        "(default: 86400)",
    )
    approle.add_argument(
        "--secret-id-file",
        type=Path,
        help="write a secret id to this file (mode 0600) unless it already "
        "contains a valid one; without this option no secret id is made",
    )
    approle.add_argument(
        "--secret-id-ttl",
        type=int,
        default=0,
        help="lifetime of new secret ids, in seconds, where 0 means they never "
        "expire (default: 0)",
    )
    approle.add_argument(
        "--rotate-secret-id",
        action="store_true",
        help="write a new secret id even if the file contains a valid one, "
        "and destroy the old one",
    )

    return parser


def read_secret_file(path: Path, option: str) -> str:
    """Return the contents of `path` without the trailing newline."""
    try:
        text = path.read_text().rstrip("\r\n")
    except OSError as error:
        message = f"failed to read {option} {path}: {error.strerror}"
        raise BootstrapError(message) from None

    if not text:
        message = f"{option} {path} is empty; write the secret into it"
        raise BootstrapError(message)

    return text


def load_options(args: argparse.Namespace) -> Options:
    """Check the parsed arguments and read the secrets they point to."""
    missing = [
        f"{flag} (or ${variable})"
        for flag, variable, value in (
            ("--vault-addr", "VAULT_ADDR", args.vault_addr),
            ("--redis-host", "REDIS_HOST", args.redis_host),
            (
                "--redis-admin-password-file",
                "REDIS_ADMIN_PASSWORD_FILE",
                args.redis_admin_password_file,
            ),
        )
        if not value
    ]
    if missing:
        message = "missing required options: " + ", ".join(missing)
        raise BootstrapError(message)

    check_ttls(args)
    return Options(
        vault_addr=args.vault_addr,
        vault_token=read_vault_token(args.vault_token_file),
        vault_cacert=check_cacert(args.vault_cacert),
        vault_namespace=args.vault_namespace or None,
        redis_host=args.redis_host,
        redis_port=parse_port(args.redis_port),
        redis_admin_username=args.redis_admin_username,
        redis_admin_password=read_secret_file(
            Path(args.redis_admin_password_file), "--redis-admin-password-file"
        ),
        redis_tls=args.redis_tls,
        redis_ca_cert=read_ca_cert(args.redis_ca_cert_file),
        db_mount=parse_mount(args.db_mount, "--db-mount"),
        db_connection=parse_mount(args.db_connection, "--db-connection"),
        role=parse_mount(args.role, "--role"),
        counter_key=args.counter_key,
        default_ttl=args.default_ttl,
        max_ttl=args.max_ttl,
        policy=parse_mount(args.policy, "--policy"),
        approle_mount=parse_mount(args.approle_mount, "--approle-mount"),
        approle_role=parse_mount(args.approle_role, "--approle-role"),
        token_ttl=args.token_ttl,
        token_max_ttl=args.token_max_ttl,
        secret_id_file=args.secret_id_file,
        secret_id_ttl=args.secret_id_ttl,
        rotate_secret_id=args.rotate_secret_id,
        update_admin_password=args.update_admin_password,
    )


def read_vault_token(path: Path | None) -> str:
    if path is not None:
        return read_secret_file(path, "--vault-token-file")

    token = os.environ.get("VAULT_TOKEN", "").strip()
    if not token:
        message = "missing Vault token: set VAULT_TOKEN or pass --vault-token-file"
        raise BootstrapError(message)

    return token


def check_cacert(value: str | None) -> str | None:
    if not value:
        return None

    if not Path(value).is_file():
        message = f"CA bundle {value!r} from --vault-cacert or $VAULT_CACERT not found"
        raise BootstrapError(message)

    return value


def read_ca_cert(path: Path | None) -> str | None:
    if path is None:
        return None

    try:
        return path.read_text()
    except OSError as error:
        message = f"failed to read --redis-ca-cert-file {path}: {error.strerror}"
        raise BootstrapError(message) from None


def parse_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        message = f"invalid --redis-port {value!r}: expected 1 to 65535"
        raise BootstrapError(message)

    return port


def parse_mount(value: str, option: str) -> str:
    """Return a Vault path segment without surrounding slashes."""
    cleaned = value.strip("/")
    if not cleaned or any(part in ("", ".", "..") for part in cleaned.split("/")):
        message = f"invalid {option} {value!r}: expected a path such as 'database'"
        raise BootstrapError(message)

    return cleaned


def check_ttls(args: argparse.Namespace) -> None:
    pairs = (
        ("--default-ttl", args.default_ttl, "--max-ttl", args.max_ttl),
        ("--token-ttl", args.token_ttl, "--token-max-ttl", args.token_max_ttl),
    )
    for low_flag, low, high_flag, high in pairs:
        if low <= 0 or high <= 0:
            message = f"invalid {low_flag} or {high_flag}: expected seconds above 0"
            raise BootstrapError(message)
        if low > high:
            message = f"invalid {low_flag} {low}: it exceeds {high_flag} {high}"
            raise BootstrapError(message)

    if args.secret_id_ttl < 0:
        message = f"invalid --secret-id-ttl {args.secret_id_ttl}: expected 0 or more"
        raise BootstrapError(message)


def make_client(options: Options) -> hvac.Client:
    return hvac.Client(
        url=options.vault_addr,
        token=options.vault_token,
        verify=options.vault_cacert or True,
        namespace=options.vault_namespace,
        timeout=10,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bootstrap and return 0 on success, or 1 after logging the error."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        options = load_options(args)
        role_id, changes = bootstrap(make_client(options), options)
    except BootstrapError as error:
        log.error("bootstrap failed: %s", error)
        return 1

    changed = sum(change != "unchanged" for change in changes)
    if changed:
        log.info("bootstrap done: %d of %d steps changed", changed, len(changes))
    else:
        log.info("bootstrap done: nothing changed")
    print(role_id)

    return 0


if __name__ == "__main__":
    sys.exit(main())
