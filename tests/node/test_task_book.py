"""Final models a node received are kept on disk with their signed items: a restarted node
(an evaluator above all) gets them back as they were received."""

from __future__ import annotations

from pathlib import Path

import msgspec
from tests.node.fakes import task

from pouw.crypto import KeyPair, sha256
from pouw.ml.models import build_model, model_hash, model_to_bytes
from pouw.node.items import FinalModel, has_valid_signature, sign_final_model
from pouw.node.tasks import TaskBook
from pouw.spec import ModelSpec

CHAIN = "pouw-test"

TASK = sha256(b"task")


def _final(key: KeyPair, seed: bytes) -> FinalModel:
    model = build_model(ModelSpec(layers=(4, 8, 3)), seed=seed)
    unsigned = FinalModel(TASK, key.public_key, model_hash(model), model_to_bytes(model), 40)
    return sign_final_model(key, CHAIN, unsigned)


def test_stored_final_models_come_back_after_a_restart(tmp_path: Path) -> None:
    finals = [_final(KeyPair.generate(), seed) for seed in (b"a", b"b")]
    book = TaskBook(tmp_path)
    for final in finals:
        book.store_model(final)
    restored = TaskBook(tmp_path).stored_models(TASK)
    assert sorted(restored, key=lambda f: f.model_hash) == sorted(
        finals, key=lambda f: f.model_hash
    )
    assert all(has_valid_signature(final, final.miner, CHAIN) for final in restored)
    assert TaskBook(tmp_path).stored_models(sha256(b"another task")) == []


def test_an_item_without_its_model_or_unreadable_is_skipped(tmp_path: Path) -> None:
    kept, lost, torn = (_final(KeyPair.generate(), seed) for seed in (b"a", b"b", b"c"))
    book = TaskBook(tmp_path)
    for final in (kept, lost, torn):
        book.store_model(final)
    book.model_path(TASK, lost.model_hash).unlink()
    book.model_path(TASK, torn.model_hash).with_suffix(".final").write_bytes(b"\x93torn")
    assert TaskBook(tmp_path).stored_models(TASK) == [kept]


def test_a_refunded_task_shows_so_with_its_deadline(tmp_path: Path) -> None:
    record = msgspec.structs.replace(task(TASK), status="refunded")
    view = TaskBook(tmp_path).view(record, None, evaluating=False)
    assert view.phase == "refunded"
    assert f"deadline (height {record.deadline})" in view.message
