"""Final models a node received are kept on disk with their signed items: a restarted node
(an evaluator above all) gets them back as they were received; each miner within its share of
the byte budget, one model per task."""

from __future__ import annotations

from pathlib import Path

import msgspec
from tests.node.fakes import task
from tests.support.items import iteration_message

from pouw.budgets import PROGRESS_MINERS_PER_TASK, ByteBudget, final_model_bytes
from pouw.crypto import KeyPair, address_of, sha256
from pouw.errors import Reason
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


def _large(key: KeyPair, task_id: bytes, size: int, fill: int = 1) -> FinalModel:
    model = bytes([fill]) * size
    return sign_final_model(
        key, CHAIN, FinalModel(task_id, key.public_key, sha256(model), model, 1)
    )


def test_a_miner_past_its_share_of_model_bytes_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    book = TaskBook(tmp_path)
    share = 4096
    book.model_budget = ByteBudget(per_sender=share, total=4 * share)
    miner = KeyPair.generate()
    assert book.store_model(_large(miner, TASK, share // 2)) is None
    refused = _large(miner, sha256(b"another task"), share // 2 + 1)
    assert book.store_model(refused) == Reason.OVER_SENDER_BUDGET
    assert not book.model_path(refused.task_id, refused.model_hash).exists()
    assert book.model_budget.of(miner.address) <= share


def test_past_the_total_a_newcomer_is_refused_and_what_came_first_stays(tmp_path: Path) -> None:
    book = TaskBook(tmp_path)
    book.model_budget = ByteBudget(per_sender=1 << 20, total=68 << 10)  # 4 models, 4 items
    first = _large(KeyPair.generate(), TASK, 16 << 10)
    assert book.store_model(first) is None
    flood = [_large(KeyPair.generate(), TASK, 16 << 10, fill=n) for n in range(2, 12)]
    refusals = [book.store_model(final) for final in flood]
    assert refusals.count(Reason.STORE_FULL) == 7 and refusals[:3] == [None] * 3
    on_disk = sum(p.stat().st_size for p in (tmp_path / TASK.hex()).iterdir())
    assert on_disk == book.model_budget.used <= 68 << 10
    assert book.with_bytes(book.of(TASK).final_models[address_of(first.miner)]) == first


def test_a_model_larger_than_its_task_allows_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    book = TaskBook(tmp_path)
    largest = final_model_bytes(ModelSpec(layers=(4, 8, 3)))
    fits, oversized = (
        _large(KeyPair.generate(), TASK, largest),
        _large(KeyPair.generate(), TASK, largest + 1),
    )
    assert book.store_model(oversized, largest) == Reason.MODEL_TOO_LARGE
    assert not (tmp_path / TASK.hex()).exists() and book.model_budget.used == 0
    assert book.store_model(fits, largest) is None


def test_memory_keeps_a_final_model_s_item_and_the_disk_its_bytes(tmp_path: Path) -> None:
    book = TaskBook(tmp_path)
    final = _final(KeyPair.generate(), b"a")
    assert book.store_model(final) is None
    (kept,) = book.of(TASK).final_models.values()
    assert kept.model == b"" and kept == msgspec.structs.replace(final, model=b"")
    assert book.with_bytes(kept) == final
    book.model_path(TASK, final.model_hash).unlink()
    assert book.with_bytes(kept) is None


def test_a_miner_s_new_model_for_a_task_replaces_its_old_one_on_disk(tmp_path: Path) -> None:
    miner = KeyPair.generate()
    book = TaskBook(tmp_path)
    first, second = _large(miner, TASK, 1024, fill=1), _large(miner, TASK, 2048, fill=2)
    book.store_model(first)
    book.store_model(second)
    assert not book.model_path(TASK, first.model_hash).exists()
    assert book.stored_models(TASK) == [second]
    on_disk = sum(p.stat().st_size for p in (tmp_path / TASK.hex()).iterdir())
    assert book.model_budget.used == on_disk


def test_progress_is_kept_for_a_bounded_number_of_miners_per_task(tmp_path: Path) -> None:
    book = TaskBook(tmp_path)
    first = KeyPair.generate()
    book.record_iteration(iteration_message(TASK, first.public_key))
    for _ in range(PROGRESS_MINERS_PER_TASK + 100):
        book.record_iteration(iteration_message(TASK, KeyPair.generate().public_key))
    book.record_iteration(iteration_message(TASK, first.public_key))
    miners = book.of(TASK).miners
    assert len(miners) == PROGRESS_MINERS_PER_TASK
    assert miners[first.address].iterations == 2


def test_a_task_s_result_frees_its_model_bytes_and_keeps_only_the_ranked_on_disk(
    tmp_path: Path,
) -> None:
    book = TaskBook(tmp_path)
    ranked, junk = (_large(KeyPair.generate(), TASK, 1024, fill=n) for n in (1, 2))
    for final in (ranked, junk):
        book.store_model(final)
    book.settle(TASK, {ranked.model_hash})
    assert book.model_budget.used == 0 and book.of(TASK).final_models == {}
    assert book.model_bytes(TASK, ranked.model_hash) == ranked.model
    assert not book.model_path(TASK, junk.model_hash).exists()
