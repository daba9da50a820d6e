"""Security test support: a Redis with a confined ACL user, and self-signed certificates
for TLS made with the ``cryptography`` package."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testkit.redis_servers import RedisServer


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


class TestCA:
    """A throw-away certificate authority issuing server and client certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "whalecast test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert = directory / "ca.pem"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = _builder(name, self.name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_key_pem(key))
        issued.key.chmod(0o600)
        return issued


PREFIX = "wc"
#: Every command the daemon sends (the store and publish scripts' own calls included).
DAEMON_COMMANDS = (
    "ping", "script|load", "evalsha", "hmget", "hget", "get", "mget", "zrange", "set",
    "setrange", "del", "zadd", "zremrangebyscore", "hset", "hincrby", "pexpire",
    "publish", "xadd", "subscribe", "unsubscribe",
)  # fmt: skip


def acl_rules(password: str, commands: tuple[str, ...] = DAEMON_COMMANDS) -> list[str]:
    """``ACL SETUSER`` rules: this password, the prefix's keys and channels, these commands."""
    return ["reset", "on", f">{password}", f"~{PREFIX}:*", f"&{PREFIX}:*", "-@all",
            *(f"+{c}" for c in commands)]  # fmt: skip


class AclRedis:
    """A redis-server whose default user needs a password, plus a confined ``whalecast`` user."""

    def __init__(
        self, directory: Path, user: str = "whalecast", password: str | None = None
    ) -> None:
        self.admin_password = secrets.token_hex(12)
        self.user = user
        self.user_password = password or secrets.token_hex(12)
        self.server = RedisServer(directory, extra_args=["--requirepass", self.admin_password])

    def admin(self) -> Any:
        return aioredis.Redis.from_url(self.server.url, password=self.admin_password)

    async def set_user(self, commands: tuple[str, ...] = DAEMON_COMMANDS) -> None:
        admin = self.admin()
        try:
            await admin.execute_command(
                "ACL", "SETUSER", self.user, *acl_rules(self.user_password, commands)
            )
        finally:
            await admin.aclose()

    def settings(self, **changes: Any) -> dict[str, Any]:
        return {"url": self.server.url, "username": self.user, "password": self.user_password,
                **changes}  # fmt: skip
