from __future__ import annotations

from pathlib import Path

import pytest

from pouw.config import ENV_VARIABLES, ConfigError, NodeConfig
from pouw.economics import NodeRole


def test_the_seed_readme_constructions_work() -> None:
    miner = NodeConfig(
        node_id="my_miner", role=NodeRole.MINER, host="0.0.0.0", port=8001, initial_stake=100.0
    )
    assert miner.role is NodeRole.MINER and miner.port == 8001
    peer = NodeConfig(
        node_id="miner_0", role=NodeRole.MINER, port=8001, bootstrap_peers=[("127.0.0.1", 8000)]
    )
    assert peer.bootstrap_peers == [("127.0.0.1", 8000)]
    fast = NodeConfig(
        node_id="performance_miner", role=NodeRole.MINER, omega_b=1e-4, omega_m=1e-6,
        max_peers=200, enable_production_features=True,
    )  # fmt: skip
    assert fast.max_peers == 200
    secure = NodeConfig(
        node_id="secure_node", role=NodeRole.SUPERVISOR, enable_security_monitoring=True,
        enable_attack_mitigation=True, preferences={"security_level": "maximum"},
    )  # fmt: skip
    assert secure.preferences["security_level"] == "maximum"


FULL_ENV = {
    "POUW_NODE_ID": "prod_node_001",
    "POUW_ROLE": "miner",
    "POUW_HOST": "0.0.0.0",
    "POUW_PORT": "8001",
    "POUW_STAKE_AMOUNT": "1000",
    "POUW_MINING_INTENSITY": "0.00001",
    "POUW_MAX_PEERS": "100",
    "POUW_BOOTSTRAP_PEERS": "node1.pouw.network:8000,[::1]:8002",
    "POUW_ENABLE_SECURITY": "false",
    "POUW_ENABLE_SECURITY_MONITORING": "no",
    "POUW_ENABLE_ATTACK_MITIGATION": "off",
    "POUW_ENABLE_PRODUCTION_FEATURES": "TRUE",
    "POUW_ENABLE_ADVANCED_FEATURES": "1",
    "POUW_OMEGA_B": "0.002",
    "POUW_OMEGA_M": "0.00002",
    "POUW_DATA_DIR": "/var/lib/pouw",
    "POUW_API_PORT": "9090",
    "POUW_API_TOKEN": "s3cret",
    "POUW_API_INSECURE": "no",
    "POUW_NETWORK_KEY": "cluster-secret",
    "POUW_NODE_KEY_FILE": "/var/run/pouw/keys/miners-0.key",
    "POUW_DEVICE": "CUDA",
    "POUW_LOG_LEVEL": "debug",
    "POUW_CHAIN_ID": "testnet",
    "POUW_GENESIS_FILE": "/etc/pouw/genesis/genesis.json",
    "POUW_DATASET_DIR": "/srv/datasets",
    "POUW_DATASET_HOSTS": "Data.Example.org, [2001:db8::1],10.0.0.7",
}


def test_from_env_reads_every_variable() -> None:
    devnet_only = {"POUW_ATTACK", "POUW_BLOCK_TIME_MS"}  # below
    assert set(FULL_ENV) | devnet_only == set(ENV_VARIABLES)
    config = NodeConfig.from_env(FULL_ENV)
    assert config.node_id == "prod_node_001" and config.role is NodeRole.MINER
    assert (config.host, config.port, config.api_port) == ("0.0.0.0", 8001, 9090)
    assert config.initial_stake == 1000 and config.mining_intensity == 0.00001
    assert config.max_peers == 100
    assert config.bootstrap_peers == [("node1.pouw.network", 8000), ("::1", 8002)]
    assert not config.enable_security and not config.enable_security_monitoring
    assert not config.enable_attack_mitigation
    assert config.enable_production_features and config.enable_advanced_features
    assert (config.omega_b, config.omega_m) == (0.002, 0.00002)
    assert config.data_dir == Path("/var/lib/pouw") and config.api_token == "s3cret"
    assert config.network_key == "cluster-secret"
    assert config.node_key_file == Path("/var/run/pouw/keys/miners-0.key")
    assert config.genesis_file == Path("/etc/pouw/genesis/genesis.json")
    assert (config.device, config.log_level, config.chain_id) == ("cuda", "DEBUG", "testnet")
    assert config.dataset_directory == Path("/srv/datasets")
    assert config.dataset_hosts == ("data.example.org", "2001:db8::1", "10.0.0.7")


def test_datasets_default_to_the_data_dir_and_no_downloads() -> None:
    config = NodeConfig.from_env({"POUW_DATA_DIR": "/var/lib/pouw"})
    assert config.dataset_directory == Path("/var/lib/pouw/datasets")
    assert config.dataset_hosts == ()


def test_unset_variables_keep_defaults() -> None:
    assert NodeConfig.from_env({}) == NodeConfig()


def test_to_env_round_trips() -> None:
    config = NodeConfig.from_env(FULL_ENV)
    assert NodeConfig.from_env(config.to_env()) == config


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POUW_ROLE", "KING"),
        ("POUW_PORT", "abc"),
        ("POUW_PORT", "70000"),
        ("POUW_API_PORT", "-1"),
        ("POUW_STAKE_AMOUNT", "-5"),
        ("POUW_MINING_INTENSITY", "lots"),
        ("POUW_MAX_PEERS", "0"),
        ("POUW_BOOTSTRAP_PEERS", "node1"),
        ("POUW_BOOTSTRAP_PEERS", "node1:99999"),
        ("POUW_ENABLE_SECURITY", "maybe"),
        ("POUW_DEVICE", "tpu"),
        ("POUW_LOG_LEVEL", "loud"),
        ("POUW_NODE_ID", "  "),
        ("POUW_DATASET_HOSTS", "evil.org/path"),
        ("POUW_DATASET_HOSTS", "user@host"),
        ("POUW_DATASET_DIR", " "),
    ],
)
def test_bad_values_name_the_variable_and_value_in_one_line(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NodeConfig.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}=") and repr(value) in message
    assert "\n" not in message


def test_bad_constructor_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^port=70000 is invalid"):
        NodeConfig(port=70000)
    with pytest.raises(ConfigError, match="role='king'"):
        NodeConfig(role="king")  # type: ignore[arg-type]
    assert NodeConfig(role="verifier").role is NodeRole.VERIFIER  # type: ignore[arg-type]


def test_an_attack_is_a_devnet_miners_setting_only() -> None:
    devnet_miner = {"POUW_ROLE": "miner", "POUW_ATTACK": "Sign_Flip"}
    config = NodeConfig.from_env(devnet_miner)
    assert config.attack == "sign_flip" and config.chain_id.startswith("pouw-devnet")
    assert NodeConfig.from_env(config.to_env()) == config
    with pytest.raises(ConfigError, match=r"^POUW_ATTACK='sign_flip' is invalid: .*devnet"):
        NodeConfig.from_env({**devnet_miner, "POUW_CHAIN_ID": "mainnet"})
    with pytest.raises(ConfigError, match=r"^POUW_ATTACK='sign_flip' is invalid: only a miner"):
        NodeConfig.from_env({**devnet_miner, "POUW_ROLE": "verifier"})
    with pytest.raises(ConfigError, match=r"^POUW_ATTACK='bribe' is invalid: must be one of"):
        NodeConfig.from_env({**devnet_miner, "POUW_ATTACK": "bribe"})


def test_a_block_time_is_a_devnet_setting_only() -> None:
    config = NodeConfig.from_env({"POUW_BLOCK_TIME_MS": "4000"})
    assert config.block_time_ms == 4000
    assert NodeConfig.from_env(config.to_env()) == config
    with pytest.raises(ConfigError, match=r"^POUW_BLOCK_TIME_MS=4000 is invalid: .*devnet"):
        NodeConfig.from_env({"POUW_BLOCK_TIME_MS": "4000", "POUW_CHAIN_ID": "mainnet"})
    with pytest.raises(ConfigError, match=r"^POUW_BLOCK_TIME_MS="):
        NodeConfig.from_env({"POUW_BLOCK_TIME_MS": "0"})


def test_the_attack_names_are_the_security_packages() -> None:
    from pouw.config import ATTACKS
    from pouw.security import ATTACKS as SECURITY_ATTACKS

    assert ATTACKS == SECURITY_ATTACKS


def test_role_parsing_accepts_any_case() -> None:
    assert NodeRole.parse("Evaluator") is NodeRole.EVALUATOR
    with pytest.raises(ValueError, match="MINER, SUPERVISOR"):
        NodeRole.parse("boss")


@pytest.mark.parametrize(
    ("file_variable", "field_name"),
    [("POUW_API_TOKEN_FILE", "api_token"), ("POUW_NETWORK_KEY_FILE", "network_key")],
)
def test_a_secret_is_read_from_the_file_its_variable_names(
    tmp_path: Path, file_variable: str, field_name: str
) -> None:
    mounted = tmp_path / "secret"
    mounted.write_text("from-a-mounted-secret\n")
    config = NodeConfig.from_env({file_variable: str(mounted)})
    assert getattr(config, field_name) == "from-a-mounted-secret"


@pytest.mark.parametrize("file_variable", ["POUW_API_TOKEN_FILE", "POUW_NETWORK_KEY_FILE"])
def test_a_secret_file_that_cannot_serve_stops_the_start_naming_its_variable(
    tmp_path: Path, file_variable: str
) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match=rf"^{file_variable}='.*missing' cannot be read: "):
        NodeConfig.from_env({file_variable: str(missing)})
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(ConfigError, match=rf"^{file_variable}='.*empty' is invalid: .*empty"):
        NodeConfig.from_env({file_variable: str(empty)})
    plain = file_variable.removesuffix("_FILE")
    empty.write_text("token")
    with pytest.raises(ConfigError, match=rf"^{file_variable} and {plain} are both set"):
        NodeConfig.from_env({file_variable: str(empty), plain: "other"})
