"""Node configuration: the seed API's NodeConfig, and `from_env` for the POUW_* variables.

Every invalid value stops the start with one line naming the field (or variable), the value
and what is allowed.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from pouw.errors import PouwError
from pouw.roles import NodeRole

DEVICES = ("cpu", "cuda", "auto")
AttackKind = Literal[
    "sign_flip",
    "scale",
    "noise",
    "little_is_enough",
    "ipm",
    "mimic",
    "label_flip",
    "adaptive_alie",
    "adaptive_alie_fresh",
    "adaptive_ipm",
    "adaptive_ipm_fresh",
    "fake_work",
    "stale_model",
]
ATTACKS: tuple[AttackKind, ...] = get_args(AttackKind)
"""What POUW_ATTACK may name: `pouw.security`'s attacks (here without torch, for the CLI)."""
DEVNET_CHAIN_PREFIX = "pouw-devnet"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?|[0-9a-f:.]*:[0-9a-f:.]*")
"""A DNS name or an IPv4 or IPv6 address, lowercase and without brackets, as
`urllib.parse.urlsplit(url).hostname` writes it."""
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class ConfigError(PouwError, ValueError):
    pass


Peer = tuple[str, int]


@dataclass
class NodeConfig:
    node_id: str = "node"
    role: NodeRole = NodeRole.PEER
    host: str = "127.0.0.1"
    port: int = 8000
    initial_stake: float = 0.0
    omega_b: float = 1e-3
    omega_m: float = 1e-5
    max_peers: int = 50
    bootstrap_peers: list[Peer] = field(default_factory=list)
    enable_security_monitoring: bool = True
    enable_attack_mitigation: bool = True
    enable_production_features: bool = False
    enable_advanced_features: bool = False
    preferences: dict[str, Any] = field(default_factory=dict)
    mining_intensity: float = 1.0
    """Fraction of the consensus nonce budget this node spends per iteration (at least one)."""
    data_dir: Path = Path(".data/node")
    api_port: int = 8080
    api_token: str | None = None
    api_insecure: bool = False
    """POUW_API_INSECURE: let `pouw node` serve its API beyond loopback without a token (anyone
    who reaches it may pay, stake and submit); refused otherwise (check_api_exposure)."""
    device: str = "cpu"
    enable_security: bool = True
    """CurveZMQ encryption of peer traffic."""
    node_key_file: Path | None = None
    """The node's signing key seed (POUW_NODE_KEY_FILE; on Kubernetes a mounted Secret).
    Without it the key lives in the data dir."""
    network_key: str | None = None
    """A secret shared by one network's nodes (a Kubernetes Secret): only holders can connect.
    Without it the CURVE server key derives from the chain id: encrypted, but open to anyone."""
    log_level: str = "INFO"
    chain_id: str = "pouw-devnet"
    genesis_file: Path | None = None
    """The chain's genesis (POUW_GENESIS_FILE, as `pouw chain init` writes it): required off
    devnet chains, whose genesis no node may derive from a name."""
    attack: str | None = None
    """Test and demo only (`pouw devnet --byzantine`): this miner misbehaves as a Byzantine
    miner of this kind (pouw.node.byzantine). Refused off devnet chains and for other roles."""
    dataset_dir: Path | None = None
    """The only place a task's dataset file is read from, by its plain name (POUW_DATASET_DIR;
    None: `data_dir`/datasets)."""
    dataset_hosts: tuple[str, ...] = ()
    """Hosts a task's dataset may be downloaded from (POUW_DATASET_HOSTS; empty: none)."""
    block_time_ms: int | None = None
    """Devnet only (`pouw devnet` sets it from its node count and the machine's cores): the
    chain's target block time, a consensus parameter, so every node of the chain sets the same
    (a node with another has another genesis and no peers). None: the network's default."""

    def __post_init__(self) -> None:
        if isinstance(self.role, str) and not isinstance(self.role, NodeRole):
            self.role = _parse("role", self.role, NodeRole.parse)
        self.data_dir = Path(self.data_dir)
        if self.node_key_file is not None:
            self.node_key_file = Path(self.node_key_file)
        if self.genesis_file is not None:
            self.genesis_file = Path(self.genesis_file)
        if self.dataset_dir is not None:
            self.dataset_dir = Path(self.dataset_dir)
        for host in self.dataset_hosts:
            _require("dataset_hosts", host, _is_host_name(host), "each must be a host name")
        self.dataset_hosts = tuple(_host_name(host) for host in self.dataset_hosts)
        self.bootstrap_peers = [
            _check_peer("bootstrap_peers", host, port) for host, port in self.bootstrap_peers
        ]
        self.device = self.device.lower()
        self.log_level = self.log_level.upper()
        _require("node_id", self.node_id, bool(self.node_id.strip()), "must not be empty")
        for name in ("port", "api_port"):
            value = getattr(self, name)
            _require(
                name,
                value,
                _is_port(value, 0),
                "must be an integer from 0 (any free port) to 65535",
            )
        for name in ("initial_stake", "omega_b", "omega_m", "mining_intensity"):
            value = getattr(self, name)
            _require(name, value, isinstance(value, int | float) and value >= 0, "must be >= 0")
        _require("max_peers", self.max_peers, self.max_peers >= 1, "must be at least 1")
        _require(
            "device", self.device, self.device in DEVICES, f"must be one of {', '.join(DEVICES)}"
        )
        _require(
            "log_level",
            self.log_level,
            self.log_level in LOG_LEVELS,
            f"must be one of {', '.join(LOG_LEVELS)}",
        )
        if self.attack is not None:
            self._check_attack()
        if self.block_time_ms is not None:
            _require(
                "block_time_ms",
                self.block_time_ms,
                self.chain_id.startswith(DEVNET_CHAIN_PREFIX),
                f"a devnet setting, refused on chain {self.chain_id!r}",
            )

    def _check_attack(self) -> None:
        _require(
            "attack", self.attack, self.attack in ATTACKS, f"must be one of {', '.join(ATTACKS)}"
        )
        _require(
            "attack",
            self.attack,
            self.chain_id.startswith(DEVNET_CHAIN_PREFIX),
            f"a test and demo setting, refused on chain {self.chain_id!r}: only devnet chains "
            f"({DEVNET_CHAIN_PREFIX}...) run Byzantine miners",
        )
        _require("attack", self.attack, self.role == NodeRole.MINER, "only a miner can attack")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NodeConfig:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for variable, (field_name, parse) in ENVIRONMENT.items():
            raw = environ.get(variable)
            if raw is not None:
                values[field_name] = _parse(variable, raw, parse)
        for file_variable, variable in SECRET_FILES.items():
            path = environ.get(file_variable)
            if path is not None:
                values[_FIELD_OF[variable]] = _secret_from_file(file_variable, path, environ)
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(_name_variable(str(error))) from None

    @property
    def dataset_directory(self) -> Path:
        return self.dataset_dir if self.dataset_dir is not None else self.data_dir / "datasets"

    def to_env(self) -> dict[str, str]:
        """The POUW_* variables that `from_env` turns back into this config."""
        env: dict[str, str] = {}
        for variable, (field_name, _) in ENVIRONMENT.items():
            value = getattr(self, field_name)
            if value is None:
                continue
            if isinstance(value, bool):
                env[variable] = "true" if value else "false"
            elif field_name == "bootstrap_peers":
                env[variable] = ",".join(_format_peer(host, port) for host, port in value)
            elif field_name == "dataset_hosts":
                if value:
                    env[variable] = ",".join(value)
            elif isinstance(value, NodeRole):
                env[variable] = value.value
            else:
                env[variable] = str(value)
        return env


def _require(name: str, value: object, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: {allowed}")


def _is_port(value: object, lowest: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= 65535


def _parse(name: str, raw: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(raw)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{name}={raw!r} is invalid: {error}") from None


def _port(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("must be an integer from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise ValueError("must be an integer from 1 to 65535")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("must be a whole number of at least 1") from None
    if value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _non_negative(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("must be a number >= 0") from None
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true or false (also 1/0, yes/no, on/off)")


def _choice(allowed: tuple[str, ...], normalise: Callable[[str], str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = normalise(raw.strip())
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _peers(raw: str) -> list[Peer]:
    peers = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, separator, port = item.rpartition(":")
        if not separator or not host:
            raise ValueError(f"{item!r} is not host:port (list them as host:port,host:port)")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        peers.append((host, _port(port)))
    return peers


def _hosts(raw: str) -> tuple[str, ...]:
    hosts = tuple(_host_name(part) for part in raw.split(",") if part.strip())
    for host in hosts:
        if not _is_host_name(host):
            raise ValueError(f"{host!r} is not a host name (list them as host,host)")
    return hosts


def _host_name(host: str) -> str:
    return host.strip().strip("[]").lower()


def _is_host_name(host: object) -> bool:
    return isinstance(host, str) and _HOST_NAME.fullmatch(_host_name(host)) is not None


def _check_peer(name: str, host: object, port: object) -> Peer:
    _require(name, (host, port), isinstance(host, str) and bool(host), "host must be a name")
    _require(name, (host, port), _is_port(port), "port must be an integer from 1 to 65535")
    assert isinstance(host, str) and isinstance(port, int)
    return host, port


def _format_peer(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "POUW_NODE_ID": ("node_id", _text),
    "POUW_ROLE": ("role", NodeRole.parse),
    "POUW_HOST": ("host", _text),
    "POUW_PORT": ("port", _port),
    "POUW_STAKE_AMOUNT": ("initial_stake", _non_negative),
    "POUW_MINING_INTENSITY": ("mining_intensity", _non_negative),
    "POUW_MAX_PEERS": ("max_peers", _positive_int),
    "POUW_BLOCK_TIME_MS": ("block_time_ms", _positive_int),
    "POUW_BOOTSTRAP_PEERS": ("bootstrap_peers", _peers),
    "POUW_ENABLE_SECURITY": ("enable_security", _boolean),
    "POUW_ENABLE_SECURITY_MONITORING": ("enable_security_monitoring", _boolean),
    "POUW_ENABLE_ATTACK_MITIGATION": ("enable_attack_mitigation", _boolean),
    "POUW_ENABLE_PRODUCTION_FEATURES": ("enable_production_features", _boolean),
    "POUW_ENABLE_ADVANCED_FEATURES": ("enable_advanced_features", _boolean),
    "POUW_OMEGA_B": ("omega_b", _non_negative),
    "POUW_OMEGA_M": ("omega_m", _non_negative),
    "POUW_DATA_DIR": ("data_dir", lambda raw: Path(_text(raw))),
    "POUW_API_PORT": ("api_port", _port),
    "POUW_API_TOKEN": ("api_token", _text),
    "POUW_API_INSECURE": ("api_insecure", _boolean),
    "POUW_NETWORK_KEY": ("network_key", _text),
    "POUW_NODE_KEY_FILE": ("node_key_file", lambda raw: Path(_text(raw))),
    "POUW_DEVICE": ("device", _choice(DEVICES, str.lower)),
    "POUW_LOG_LEVEL": ("log_level", _choice(LOG_LEVELS, str.upper)),
    "POUW_CHAIN_ID": ("chain_id", _text),
    "POUW_GENESIS_FILE": ("genesis_file", lambda raw: Path(_text(raw))),
    "POUW_ATTACK": ("attack", _choice(ATTACKS, str.lower)),
    "POUW_DATASET_DIR": ("dataset_dir", lambda raw: Path(_text(raw))),
    "POUW_DATASET_HOSTS": ("dataset_hosts", _hosts),
}
ENV_VARIABLES = tuple(ENVIRONMENT)
SECRET_FILES = {
    "POUW_API_TOKEN_FILE": "POUW_API_TOKEN",
    "POUW_NETWORK_KEY_FILE": "POUW_NETWORK_KEY",
}
"""A secret's file (on Kubernetes a mounted Secret) instead of its variable: a file is not
inherited by child processes nor shown with the environment (/proc/<pid>/environ)."""
_FIELD_OF = {variable: field_name for variable, (field_name, _) in ENVIRONMENT.items()}
_FIELD_TO_VARIABLE = {field_name: variable for variable, (field_name, _) in ENVIRONMENT.items()}
assert set(_FIELD_TO_VARIABLE) <= {f.name for f in fields(NodeConfig)}


def _secret_from_file(file_variable: str, path: str, environ: Mapping[str, str]) -> str:
    """The secret in the file `file_variable` names; one line naming the variable when the
    file cannot be read, is empty, or its plain variable is set too (which would win?)."""
    variable = SECRET_FILES[file_variable]
    if environ.get(variable) is not None:
        raise ConfigError(f"{file_variable} and {variable} are both set: set one of them")
    try:
        secret = Path(_parse(file_variable, path, _text)).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigError(f"{file_variable}={path!r} cannot be read: {reason}") from None
    if not secret:
        raise ConfigError(f"{file_variable}={path!r} is invalid: the file is empty")
    return secret


def _name_variable(message: str) -> str:
    """Rewrite a field-level error ('port=...') in terms of its variable ('POUW_PORT=...')."""
    field_name, _, rest = message.partition("=")
    variable = _FIELD_TO_VARIABLE.get(field_name)
    return f"{variable}={rest}" if variable else message


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) reaches only this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_api_exposure(config: NodeConfig) -> None:
    """An API beyond loopback without a token would take anyone's writes: refused, unless
    POUW_API_INSECURE allows it (then warned at every start). The token is `api_token`, which
    `from_env` fills from POUW_API_TOKEN_FILE too: check a config read in full."""
    if config.api_token is not None or is_loopback(config.host):
        return
    if not config.api_insecure:
        raise ConfigError(
            f"POUW_HOST={config.host} serves the API beyond loopback without POUW_API_TOKEN: "
            "set POUW_API_TOKEN or POUW_API_TOKEN_FILE (or POUW_HOST=127.0.0.1; "
            "POUW_API_INSECURE=1 allows anonymous writes anyway)"
        )
    logging.getLogger("pouw.config").warning(
        "INSECURE: POUW_API_INSECURE is set and POUW_HOST=%s has no POUW_API_TOKEN: anyone who "
        "reaches this API can pay, stake and submit tasks with this node's key",
        config.host,
    )
