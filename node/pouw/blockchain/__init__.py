"""The ledger: transactions, blocks, state, chain with fork choice, store and mempool."""

from pouw.blockchain.block import Block, BlockHeader, decode_block, encode_block
from pouw.blockchain.chain import AddStatus, Chain, ChainMismatch, ChainUpdate
from pouw.blockchain.mempool import Mempool
from pouw.blockchain.ml_task import MLTask
from pouw.blockchain.params import ChainParams, devnet_key, devnet_params, genesis_block
from pouw.blockchain.state import LedgerState
from pouw.blockchain.store import ChainStore
from pouw.blockchain.transactions import (
    COIN,
    BuyTicket,
    PayForTask,
    SlashEvidence,
    TaskResult,
    Transaction,
    Transfer,
    coins,
    decode_transaction,
    encode_transaction,
    sign_transaction,
)
from pouw.errors import InvalidBlock, InvalidTransaction, MalformedData, ReorgTooDeep
from pouw.spec import DatasetSpec, ModelSpec, TaskSpec

__all__ = [
    "MLTask",
    "COIN",
    "AddStatus",
    "Block",
    "BlockHeader",
    "BuyTicket",
    "Chain",
    "ChainMismatch",
    "ChainParams",
    "ChainStore",
    "ChainUpdate",
    "DatasetSpec",
    "InvalidBlock",
    "InvalidTransaction",
    "LedgerState",
    "MalformedData",
    "Mempool",
    "ModelSpec",
    "PayForTask",
    "ReorgTooDeep",
    "SlashEvidence",
    "TaskResult",
    "TaskSpec",
    "Transaction",
    "Transfer",
    "coins",
    "decode_block",
    "decode_transaction",
    "devnet_key",
    "devnet_params",
    "encode_block",
    "encode_transaction",
    "genesis_block",
    "sign_transaction",
]
