"""Every decoder that takes bytes from strangers, fuzzed.

Inputs: random bytes, and valid encodings mutated (bit flips, truncation, extension, splices,
structural edits of the decoded msgpack tree: values replaced, fields swapped, dropped or
duplicated, and length prefixes claiming gigabytes). The property, for each decoder: it returns
a value of its type, or raises its documented error (MalformedData, DropMessage, CorruptModel,
ValueError for compressed updates), never anything else; quickly; and what it returns is
usable: the node's next steps on it (ids, hashes, signature checks, re-encoding) do not raise.
A separate property bounds the memory a decode may take against the size of its input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pouw.blockchain.block import Block, decode_block, encode_block, sign_block
from pouw.blockchain.iteration_message import IterationMessage, decode_iteration_message
from pouw.blockchain.params import devnet_key, devnet_params, genesis_block
from pouw.blockchain.transactions import (
    BuyTicket,
    Equivocation,
    EvidenceKind,
    FailedReexecution,
    PayForTask,
    RankedModel,
    SlashEvidence,
    Statement,
    TaskResult,
    Transaction,
    Transfer,
    decode_transaction,
    encode_transaction,
    reward_transaction,
    sign_transaction,
)
from pouw.crypto import canonical_bytes, sha256
from pouw.errors import MalformedData
from pouw.ml.compression import CompressedUpdate, StromCompressor
from pouw.ml.models import CorruptModel, build_model, load_model_bytes, model_to_bytes
from pouw.network.messages import (
    BODY_TYPES,
    Blocks,
    Bye,
    Data,
    DropMessage,
    Envelope,
    GetBlocks,
    GetData,
    Hello,
    Inv,
    ItemKind,
    Items,
    Peers,
    Ping,
    Pong,
    message_type,
    open_frame,
    seal,
    sign_envelope,
)
from pouw.node.items import (
    BlockVerdict,
    FinalModel,
    IterationBatch,
    IterationRecord,
    decode_item,
    encode_item,
    has_valid_signature,
    sign_batch,
    sign_final_model,
    sign_verdict,
)
from pouw.roles import NodeRole
from pouw.spec import (
    DatasetSpec,
    ModelSpec,
    TaskSpec,
    TaskSpecError,
    task_spec_from_mapping,
)
from tests.fuzz import fuzz_settings
from tests.support.items import iteration_message

CHAIN = "pouw-devnet"
MAX_FRAME = 16 * 1024 * 1024
SLOW_S = 5.0
"""No single decode may take this long (a loaded two-core machine included): a hang fails."""
KEY = devnet_key("fuzzer")
OTHER = devnet_key("other")
H = bytes(range(32))
TINY_MODEL = ModelSpec(layers=(4, 3, 2))
SPEC = TaskSpec(model=ModelSpec(layers=(64, 16, 10)), dataset=DatasetSpec(name="digits"))

# -- valid samples of every structure --------------------------------------------------------------


def _tx(payload: Any, nonce: int = 0, fee: int = 7) -> Transaction:
    return sign_transaction(KEY, payload, nonce=nonce, fee=fee, chain_id=CHAIN)


TRANSACTIONS = [
    _tx(Transfer(recipient=OTHER.address, amount=12_345)),
    _tx(PayForTask(spec=SPEC, reward=10**9), nonce=1),
    _tx(BuyTicket(role=NodeRole.MINER, amount=10**7, preferences={"gpu": "no"}), nonce=2),
    _tx(
        TaskResult(
            task_id=H,
            ranking=(
                RankedModel(OTHER.address, H, 0.93, H, bytes(64)),
                RankedModel(KEY.address, H, 0.5, H, bytes(64)),
            ),
        ),
        nonce=3,
    ),
    _tx(
        SlashEvidence(
            H,
            Equivocation(
                EvidenceKind.VERDICT, Statement(b"one", bytes(64)), Statement(b"two", bytes(64))
            ),
        )
    ),
    _tx(SlashEvidence(H, FailedReexecution(b"a block")), nonce=4),
    reward_transaction(KEY.address, 10**7, 5),
]
MESSAGE = iteration_message(H, KEY.public_key)
_GENESIS = genesis_block(devnet_params(("fuzzer",)))
BLOCKS = [
    _GENESIS,
    sign_block(
        Block(
            header=msgspec.structs.replace(
                _GENESIS.header,
                height=1,
                prev_hash=_GENESIS.hash(),
                nonce=77,
                miner=KEY.public_key,
                iteration_hash=sha256(MESSAGE.encode()),
            ),
            transactions=tuple(TRANSACTIONS[-1:] + TRANSACTIONS[:2]),
            iteration_message=MESSAGE.encode(),
            checkpoint=b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
        ),
        KEY,
        CHAIN,
    ),
]
_RECORD = IterationRecord(MESSAGE.encode(), b"PWU1" + bytes(12), bytes(64))
ITEMS: list[IterationRecord | IterationBatch | FinalModel | BlockVerdict] = [
    _RECORD,
    sign_batch(KEY, CHAIN, IterationBatch(KEY.public_key, (_RECORD, _RECORD))),
    sign_final_model(
        KEY,
        CHAIN,
        FinalModel(
            H, KEY.public_key, H, model_to_bytes(build_model(TINY_MODEL, b"seed")), iterations=9
        ),
    ),
    sign_verdict(KEY, CHAIN, BlockVerdict(H, KEY.public_key, False, "loss_mismatch")),
]
BODIES = [
    Hello(CHAIN, H, 3, H, 4, "127.0.0.1", 9000, H, bytes(64)),
    Ping(1, 2, H, 3),
    Pong(1, 2, H, 3),
    Peers([("10.0.0.1", 1), ("node-2.pouw", 65535)]),
    Bye("full", [("10.0.0.2", 2)]),
    Inv(ItemKind.TX, [H, sha256(H)]),
    GetData(ItemKind.BLOCK, [H]),
    Data(ItemKind.TX, H, encode_transaction(TRANSACTIONS[0])),
    Items(ItemKind.VERDICT, [(H, b"one"), (sha256(H), b"two")]),
    GetBlocks([H, sha256(H)], 500),
    Blocks([encode_block(block) for block in BLOCKS]),
]
assert {message_type(body) for body in BODIES} == set(BODY_TYPES), "a body type is not sampled"
FRAMES = [seal(KEY, CHAIN, body, 1_767_225_600_000) for body in BODIES]
MODEL = build_model(TINY_MODEL, b"seed")
MODEL_BYTES = model_to_bytes(MODEL)
_compressor = StromCompressor(64, 0.05)
UPDATES = [
    _compressor.compress(torch.linspace(-0.2, 0.2, 64)).to_bytes(),
    _compressor.compress(torch.zeros(64)).to_bytes(),
]


# -- the decoders and what follows each ------------------------------------------------------------


def _after_transaction(tx: Transaction) -> None:
    assert decode_transaction(encode_transaction(tx)) == tx
    tx.txid()
    tx.kind  # noqa: B018 - the tag must resolve
    tx.has_valid_signature(CHAIN)
    tx.sender_address  # noqa: B018


def _after_block(block: Block) -> None:
    assert decode_block(encode_block(block)) == block
    block.hash()
    for tx in block.transactions:
        _after_transaction(tx)


def _after_message(message: IterationMessage) -> None:
    assert decode_iteration_message(message.encode()) == message
    message.commitment()
    message.precursor()


def _after_item(item: IterationRecord | IterationBatch | FinalModel | BlockVerdict) -> None:
    assert decode_item(type(item), encode_item(item)) == item
    author = item.miner if isinstance(item, IterationBatch | FinalModel) else KEY.public_key
    if isinstance(item, BlockVerdict):
        author = item.verifier
    has_valid_signature(item, author, CHAIN)
    if not isinstance(item, IterationRecord):
        item.item_id()


def _open(frame: bytes) -> tuple[Envelope, Any]:
    return open_frame(frame, CHAIN, MAX_FRAME)


def _after_frame(opened: tuple[Envelope, Any]) -> None:
    envelope, body = opened
    assert message_type(body) == envelope.type


def _load_model(data: bytes) -> None:
    load_model_bytes(build_model(TINY_MODEL, b"seed"), data)


@dataclass(frozen=True)
class Decoder:
    name: str
    decode: Callable[[bytes], Any]
    error: type[Exception]
    samples: list[bytes]
    after: Callable[[Any], None] = lambda value: None
    msgpack: bool = True


DECODERS = [
    Decoder(
        "transaction",
        decode_transaction,
        MalformedData,
        [encode_transaction(tx) for tx in TRANSACTIONS],
        _after_transaction,
    ),
    Decoder("block", decode_block, MalformedData, [encode_block(b) for b in BLOCKS], _after_block),
    Decoder(
        "iteration_message",
        decode_iteration_message,
        MalformedData,
        [MESSAGE.encode()],
        _after_message,
    ),
    *(
        Decoder(
            f"item:{kind.__name__}",
            lambda data, kind=kind: decode_item(kind, data),  # type: ignore[misc]
            MalformedData,
            [encode_item(item) for item in ITEMS if type(item) is kind],
            _after_item,
        )
        for kind in (IterationRecord, IterationBatch, FinalModel, BlockVerdict)
    ),
    Decoder("frame", _open, DropMessage, FRAMES, _after_frame),
    Decoder("safetensors_model", _load_model, CorruptModel, [MODEL_BYTES], msgpack=False),
    Decoder(
        "compressed_update",
        lambda data: CompressedUpdate.from_bytes(data, 64),
        ValueError,
        UPDATES,
        msgpack=False,
    ),
]
BY_NAME = {decoder.name: decoder for decoder in DECODERS}


def judge(decoder: Decoder, data: bytes) -> str:
    """Run one decode; fail on anything but a value or the documented error."""
    started = time.perf_counter()
    try:
        value = decoder.decode(data)
    except decoder.error:
        outcome = "refused"
    except BaseException as error:  # a panic (a BaseException) is a finding too
        pytest.fail(f"{decoder.name} raised {type(error).__name__}: {error!r} on {data[:200]!r}")
    else:
        decoder.after(value)
        outcome = "decoded"
    elapsed = time.perf_counter() - started
    assert elapsed < SLOW_S, f"{decoder.name} took {elapsed:.1f} s on {len(data)} bytes"
    return outcome


# -- mutations -------------------------------------------------------------------------------------

MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=80)
    | st.sampled_from(["transfer", "reward", "slash", "tx", "block", "MINER", "pw" + "0" * 40]),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
BOUNDARY_INTS = st.sampled_from(
    [-1, 0, 1, 31, 32, 33, 63, 64, 255, 256, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
)
LENGTH_BOMBS = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4,294,967,295 elements
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
    b"\xdb\xff\xff\xff\xff",  # str32
    b"\xdc\xff\xff",  # array16
    b"\xc5\xff\xff",  # bin16
]


def _containers(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if isinstance(tree, list | dict) else []
    if isinstance(tree, list):
        for index, child in enumerate(tree):
            found += _containers(child, (*path, index))
    elif isinstance(tree, dict):
        for key, child in tree.items():
            found += _containers(child, (*path, key))
    return found


def _at(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step]
    return tree


def _edit_structure(data: st.DataObject, encoded: bytes) -> bytes:
    """Decode to a plain msgpack tree, edit one container, encode again: this gets past the
    byte-level parser to the typed validation."""
    tree = msgspec.msgpack.decode(encoded)
    container = _at(tree, data.draw(st.sampled_from(_containers(tree)), label="container"))
    keys = list(range(len(container))) if isinstance(container, list) else list(container)
    if not keys:
        container_append(container, data.draw(MSGPACK_VALUES))
        return msgspec.msgpack.encode(tree)
    key = data.draw(st.sampled_from(keys), label="field")
    edit = data.draw(
        st.sampled_from(["replace", "boundary", "swap", "drop", "duplicate", "grow", "shrink"])
    )
    value = container[key]
    if edit == "replace":
        container[key] = data.draw(MSGPACK_VALUES, label="value")
    elif edit == "boundary":
        container[key] = data.draw(BOUNDARY_INTS, label="int")
    elif edit == "swap":
        other = data.draw(st.sampled_from(keys), label="other")
        container[key], container[other] = container[other], value
    elif edit == "drop":
        del container[key]
    elif edit == "duplicate":
        container_append(container, value)
    elif edit == "grow" and isinstance(value, bytes | str):
        container[key] = value + value[:1] * data.draw(st.integers(1, 70), label="by")
    elif edit == "shrink" and isinstance(value, bytes | str):
        container[key] = value[: data.draw(st.integers(0, max(0, len(value) - 1)), label="to")]
    return msgspec.msgpack.encode(tree)


def container_append(container: list[Any] | dict[Any, Any], value: Any) -> None:
    if isinstance(container, list):
        container.append(value)
    else:
        container[f"extra{len(container)}"] = value


def mutate(data: st.DataObject, sample: bytes, msgpack: bool = True) -> bytes:
    kinds = ["flip", "truncate", "extend", "splice"] + (["structure", "bomb"] if msgpack else [])
    kind = data.draw(st.sampled_from(kinds), label="mutation")
    if kind == "flip":
        mutated = bytearray(sample)
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            position = data.draw(st.integers(0, len(mutated) - 1), label="at")
            mutated[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        return bytes(mutated)
    if kind == "truncate":
        return sample[: data.draw(st.integers(0, len(sample) - 1), label="keep")]
    if kind == "extend":
        return sample + data.draw(st.binary(min_size=1, max_size=64), label="tail")
    if kind == "splice":
        start = data.draw(st.integers(0, len(sample)), label="start")
        end = data.draw(st.integers(start, min(len(sample), start + 64)), label="end")
        return sample[:start] + data.draw(st.binary(max_size=32), label="insert") + sample[end:]
    if kind == "structure":
        return _edit_structure(data, sample)
    position = data.draw(st.integers(0, len(sample) - 1), label="at")
    bomb = data.draw(st.sampled_from(LENGTH_BOMBS), label="bomb")
    return sample[:position] + bomb + sample[position + len(bomb) :]


# -- the properties --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BY_NAME))
def test_samples_decode(name: str) -> None:
    decoder = BY_NAME[name]
    for sample in decoder.samples:
        assert judge(decoder, sample) == "decoded"


@pytest.mark.parametrize("name", list(BY_NAME))
@fuzz_settings(150)
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_refused_cleanly(name: str, data: bytes) -> None:
    judge(BY_NAME[name], data)


@pytest.mark.parametrize("name", list(BY_NAME))
@fuzz_settings(300)
@given(data=st.data())
def test_mutated_encodings_are_refused_or_decoded_cleanly(name: str, data: st.DataObject) -> None:
    decoder = BY_NAME[name]
    sample = data.draw(st.sampled_from(decoder.samples), label="sample")
    judge(decoder, mutate(data, sample, decoder.msgpack))


@fuzz_settings(300)
@given(data=st.data())
def test_resigned_frames_reach_the_body_decoders_cleanly(data: st.DataObject) -> None:
    """open_frame checks the signature before the body: to fuzz the body decoders, sign
    mutated bodies (and types) properly, as a peer that means harm would."""
    body = data.draw(st.sampled_from(BODIES), label="body")
    encoded = canonical_bytes(body)
    source = data.draw(st.sampled_from(["same", "mutated", "random"]), label="body bytes")
    body_bytes = {
        "same": lambda: encoded,
        "mutated": lambda: mutate(data, encoded),
        "random": lambda: data.draw(st.binary(max_size=256), label="random body"),
    }[source]()
    kind = data.draw(st.sampled_from([*BODY_TYPES, "", "x" * 32, message_type(body)]), label="type")
    envelope = Envelope(1, kind, KEY.public_key, 1_767_225_600_000, body_bytes)
    signed = sign_envelope(KEY, CHAIN, envelope)
    judge(BY_NAME["frame"], canonical_bytes(signed))


SAFETENSORS_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL",
                      "F8_E4M3", "F8_E5M2", "U16", "U32", "U64", "C64", "X", ""]  # fmt: skip


@fuzz_settings(300)
@given(data=st.data())
def test_safetensors_headers_edited_are_refused_cleanly(data: st.DataObject) -> None:
    """Edit the JSON header of a valid model blob (dtypes, shapes, offsets, names, metadata)
    and its length prefix, which a byte flip rarely gets right."""
    (length,) = struct.unpack_from("<Q", MODEL_BYTES)
    header = json.loads(MODEL_BYTES[8 : 8 + length])
    payload = MODEL_BYTES[8 + length :]
    names = [name for name in header if name != "__metadata__"]
    name = data.draw(st.sampled_from(names), label="tensor")
    edit = data.draw(st.sampled_from(["dtype", "shape", "offsets", "rename", "drop", "meta"]))
    entry = header[name]
    if edit == "dtype":
        entry["dtype"] = data.draw(st.sampled_from(SAFETENSORS_DTYPES), label="dtype")
    elif edit == "shape":
        entry["shape"] = data.draw(
            st.lists(st.integers(-1, 2**40) | BOUNDARY_INTS, max_size=5), label="shape"
        )
    elif edit == "offsets":
        entry["data_offsets"] = data.draw(
            st.lists(st.integers(-1, 2**64 - 1) | BOUNDARY_INTS, max_size=3), label="offsets"
        )
    elif edit == "rename":
        header[data.draw(st.text(max_size=12), label="name")] = header.pop(name)
    elif edit == "drop":
        del header[name]
    else:
        header["__metadata__"] = data.draw(
            st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers()), label="m"
        )
    text = json.dumps(header).encode()
    claimed = data.draw(st.sampled_from(["exact", "short", "long", "huge"]), label="length prefix")
    prefix = {"exact": len(text), "short": len(text) - 1, "long": len(text) + 9, "huge": 2**63}
    blob = struct.pack("<Q", prefix[claimed]) + text + payload
    judge(BY_NAME["safetensors_model"], blob)


@fuzz_settings(200)
@given(value=MSGPACK_VALUES, data=st.data())
def test_task_specs_from_clients_are_built_or_refused_with_a_named_field(
    value: Any, data: st.DataObject
) -> None:
    """`pouw task submit` and the API parse YAML/JSON into a mapping: anything that is not a
    valid spec is a TaskSpecError."""
    valid = msgspec.to_builtins(SPEC)
    candidates = [value, valid]
    path = data.draw(st.sampled_from(_containers(valid)), label="where")
    target = _at(valid, path)
    if isinstance(target, dict) and target:
        target[data.draw(st.sampled_from(sorted(target)), label="field")] = value
    for candidate in candidates:
        try:
            spec = task_spec_from_mapping(candidate)
        except TaskSpecError:
            continue
        assert isinstance(spec, TaskSpec)


def _peak_bytes(decode: Callable[[bytes], Any], data: bytes) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(Exception):  # only the memory is measured here
            decode(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", [d.name for d in DECODERS if d.msgpack])
@fuzz_settings(60)
@given(data=st.data())
def test_length_claims_cost_no_more_memory_than_the_input(name: str, data: st.DataObject) -> None:
    """A frame that claims a 4 GiB array or string must be refused without allocating it:
    the peak stays within a small multiple of the input's size."""
    decoder = BY_NAME[name]
    sample = data.draw(st.sampled_from(decoder.samples), label="sample")
    position = data.draw(st.integers(0, len(sample) - 1), label="at")
    bomb = data.draw(st.sampled_from(LENGTH_BOMBS), label="bomb")
    padding = data.draw(st.integers(0, 4096), label="padding")
    forged = sample[:position] + bomb + bytes(padding)
    assert _peak_bytes(decoder.decode, forged) < 64 * len(forged) + (1 << 20)


# -- the node's handler: every item kind, end to end ----------------------------------------------


class LiveNode:
    """A started PoUWNode (no mining) driven on its own event loop, one call at a time."""

    def __init__(self, data_dir: Any) -> None:
        from pouw.node import NodeConfig, PoUWNode

        self.loop = asyncio.new_event_loop()
        config = NodeConfig(node_id="node", role=NodeRole.PEER, port=0, data_dir=data_dir)
        self.node = PoUWNode("node", NodeRole.PEER, config=config)
        self.run(self.node.start())

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, SLOW_S * 6))

    def close(self) -> None:
        self.run(self.node.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    node = LiveNode(tmp_path_factory.mktemp("live"))
    yield node
    node.close()


def _node_samples(live: LiveNode) -> dict[ItemKind, list[bytes]]:
    from pouw.blockchain.params import bootstrap_task_id

    node = live.node
    task_id = bootstrap_task_id(node.params)
    assert task_id is not None and node.params.bootstrap_task is not None
    client = devnet_key("client")
    transfer = sign_transaction(
        client, Transfer(OTHER.address, 5), nonce=0, fee=3, chain_id=node.params.chain_id
    )
    message = msgspec.structs.replace(MESSAGE, task_id=task_id)
    record = IterationRecord(message.encode(), b"PWU1" + bytes(12), bytes(64))
    chain = node.params.chain_id
    model = model_to_bytes(build_model(node.params.bootstrap_task.model, task_id))
    template = node.chain.assemble_block(
        KEY.public_key, KEY.address, [transfer], iteration_message=message.encode()
    )
    return {
        ItemKind.TX: [encode_transaction(transfer)],
        ItemKind.BLOCK: [encode_block(sign_block(template, KEY, node.params.chain_id))],
        ItemKind.ITERATION: [
            encode_item(sign_batch(KEY, chain, IterationBatch(KEY.public_key, (record,))))
        ],
        ItemKind.MODEL: [
            encode_item(
                sign_final_model(KEY, chain, FinalModel(task_id, KEY.public_key, H, model, 5))
            )
        ],
        ItemKind.VERDICT: [
            encode_item(
                sign_verdict(KEY, chain, BlockVerdict(template.hash(), KEY.public_key, True))
            )
        ],
    }


def _resigned_item(data: st.DataObject, kind: ItemKind, sample: bytes, chain: str) -> bytes:
    """The sample with what its signature covers mutated, signed again: past the signature
    check, into what the node does with the contents."""
    if kind == ItemKind.MODEL:
        final = decode_item(FinalModel, sample)
        model = mutate(data, final.model, msgpack=False)
        final = msgspec.structs.replace(final, model=model)
        return encode_item(sign_final_model(KEY, chain, final))
    batch = decode_item(IterationBatch, sample)
    record = batch.records[0]
    edit = data.draw(st.sampled_from(["message", "update", "miner", "both"]), label="edit")
    message, update = record.message, record.update
    if edit in ("message", "both"):
        message = mutate(data, message)
    if edit in ("update", "both"):
        update = mutate(data, UPDATES[0], msgpack=False)
    if edit == "miner":
        other = msgspec.structs.replace(decode_iteration_message(message), miner=OTHER.public_key)
        message = other.encode()
    records = (IterationRecord(message, update, record.signature),)
    return encode_item(sign_batch(KEY, chain, IterationBatch(KEY.public_key, records)))


def _item_id(kind: ItemKind, payload: bytes) -> bytes:
    """The id a sender would announce: the payload's real id when it decodes, else a hash."""
    try:
        if kind == ItemKind.TX:
            return decode_transaction(payload).txid()
        if kind == ItemKind.BLOCK:
            return decode_block(payload).hash()
        item_type = {
            ItemKind.ITERATION: IterationBatch,
            ItemKind.MODEL: FinalModel,
            ItemKind.VERDICT: BlockVerdict,
        }[kind]
        return decode_item(item_type, payload).item_id()  # type: ignore[no-any-return]
    except MalformedData:
        return sha256(payload)


@fuzz_settings(250)
@given(data=st.data())
def test_the_node_judges_any_item_without_raising(live: LiveNode, data: st.DataObject) -> None:
    """Intake.on_item is what the network calls with a peer's bytes: for every kind, random
    and mutated payloads (re-signed where a signature guards them) get a verdict, never an
    exception (an exception there is a `handler_error`: no verdict, no ban score)."""
    from pouw.network.messages import ItemResult

    samples = _node_samples(live)
    kind = data.draw(st.sampled_from(sorted(samples)), label="kind")
    source = data.draw(
        st.sampled_from(["mutated", "random", "sample", "resigned"]), label="payload"
    )
    sample = data.draw(st.sampled_from(samples[kind]), label="sample")
    if source == "random":
        payload = data.draw(st.binary(max_size=1024), label="random")
    elif source == "resigned" and kind in (ItemKind.ITERATION, ItemKind.MODEL):
        payload = _resigned_item(data, kind, sample, live.node.params.chain_id)
    else:
        payload = sample if source == "sample" else mutate(data, sample)
    item_id = _item_id(kind, payload)
    started = time.perf_counter()
    result = live.run(live.node.intake.on_item(kind, item_id, payload, "fuzzer"))
    assert isinstance(result, ItemResult)
    assert time.perf_counter() - started < SLOW_S


@fuzz_settings(60)
@given(data=st.data())
def test_the_node_imports_any_sync_batch_without_raising(
    live: LiveNode, data: st.DataObject
) -> None:
    from pouw.network.messages import ItemResult

    block = _node_samples(live)[ItemKind.BLOCK][0]
    batch = data.draw(
        st.lists(
            st.one_of(st.just(block), st.binary(max_size=256), st.just(b"")),
            max_size=5,
        ),
        label="batch",
    )
    batch = [mutate(data, b) if b == block and data.draw(st.booleans()) else b for b in batch]
    result = live.run(live.node.intake.on_sync_blocks(batch, "fuzzer"))
    assert isinstance(result, ItemResult)
