"""The batch store's state machine on a real SQLite database (store/batches.py): claims, results,
recovery, expiry, ending and purging, without a server."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from missive.store import batches as store
from missive.store.db import connect, instances
from missive.wire.batches import ERRORED, SUCCEEDED, Batch, batch_object, parse_create, result_line
from missive.wire.errors import ApiError
from missive.wire.times import now


@pytest.fixture
def db(tmp_path: Path) -> sa.Engine:
    return connect(tmp_path / "missive.db")


def make(db: sa.Engine, size: int, expires_in: float = 3600.0, batch_id: str = "msgbatch_a") -> Batch:
    created = now()
    batch = Batch(batch_id, "default", "key_1", "2023-06-01", ("b1",), created,
                  created + timedelta(seconds=expires_in), None, None, None)  # fmt: skip
    store.create(db, batch, [(f"req_{batch_id}_{i}", f"c{i}", json.dumps({"n": i})) for i in range(size)])
    return batch


def beat(db: sa.Engine, instance_id: str, age: float = 0.0) -> None:
    with db.begin() as conn:
        conn.execute(instances.insert().values(id=instance_id, started_at=now(), heartbeat=_ms() - int(age * 1000)))


def _ms() -> int:
    return int(time.time() * 1000)


def test_a_claimed_request_is_written_once_and_the_last_result_ends_the_batch(db: sa.Engine) -> None:
    batch = make(db, 3)
    beat(db, "inst_a")
    claimed = store.claim(db, "inst_a", 2, _ms())
    assert [c.custom_id for c in claimed] == ["c0", "c1"] and claimed[0].betas == ("b1",)
    assert [c.custom_id for c in store.claim(db, "inst_b", 5, _ms())] == ["c2"]
    assert store.claim(db, "inst_b", 5, _ms()) == []
    assert store.finish(db, claimed[0].id, batch.id, "inst_a", SUCCEEDED, '{"type":"succeeded"}')
    assert not store.finish(db, claimed[0].id, batch.id, "inst_a", ERRORED, "{}"), "written twice"
    assert not store.finish(db, claimed[1].id, batch.id, "inst_b", ERRORED, "{}"), "not its claim"
    store.finish(db, claimed[1].id, batch.id, "inst_a", ERRORED, '{"type":"errored"}')
    assert store.get(db, batch.id, None).ended_at is None  # type: ignore[union-attr]
    store.finish(db, f"req_{batch.id}_2", batch.id, "inst_b", SUCCEEDED, '{"type":"succeeded"}')
    ended = store.get(db, batch.id, "default")
    assert ended is not None and ended.ended_at is not None
    assert store.counts(db, [batch.id])[batch.id] == {"succeeded": 2, "errored": 1}
    assert store.get(db, batch.id, "another workspace") is None


def test_the_claims_of_a_dead_front_end_are_queued_again(db: sa.Engine) -> None:
    batch = make(db, 2)
    beat(db, "inst_alive")
    beat(db, "inst_dead", age=60)
    store.claim(db, "inst_dead", 1, _ms())
    store.claim(db, "inst_alive", 1, _ms())
    assert store.recover(db, _ms(), 10_000) == 1
    again = store.claim(db, "inst_alive", 5, _ms())
    assert [c.custom_id for c in again] == ["c0"] and again[0].attempts == 2
    assert store.give_back(db, "inst_alive") == 2
    assert store.counts(db, [batch.id])[batch.id] == {"queued": 2}


def test_a_retried_request_waits_for_its_not_before(db: sa.Engine) -> None:
    make(db, 1)
    claimed = store.claim(db, "inst_a", 1, _ms())[0]
    store.requeue(db, claimed.id, "inst_a", _ms() + 60_000)
    assert store.claim(db, "inst_a", 1, _ms()) == []
    assert store.claim(db, "inst_a", 1, _ms() + 61_000)[0].id == claimed.id


def test_cancel_and_expiry_end_a_batch_and_purge_archives_its_results(db: sa.Engine) -> None:
    canceled = make(db, 3, batch_id="msgbatch_c")
    running = store.claim(db, "inst_a", 1, _ms())[0]
    store.cancel(db, canceled.id)
    assert store.get(db, canceled.id, None).ended_at is None  # type: ignore[union-attr]  # one still runs
    store.finish(db, running.id, canceled.id, "inst_a", SUCCEEDED, '{"type":"succeeded"}')
    assert store.get(db, canceled.id, None).ended_at is not None  # type: ignore[union-attr]
    assert store.counts(db, [canceled.id])[canceled.id] == {"succeeded": 1, "canceled": 2}

    late = make(db, 2, expires_in=-1, batch_id="msgbatch_e")
    assert store.expire(db) == 2 and store.end_finished(db) == [late.id]
    lines = [json.loads(result_line(cid, status, result)) for _, cid, status, result in store.results(db, late.id, -1, 10)]
    assert lines == [{"custom_id": "c0", "result": {"type": "expired"}}, {"custom_id": "c1", "result": {"type": "expired"}}]

    assert store.purge(db, now() + timedelta(seconds=1)) == 2
    archived = store.get(db, canceled.id, None)
    assert archived is not None and archived.archived_at is not None
    shown = batch_object(archived, store.counts(db, [archived.id])[archived.id], "http://x/results")
    assert shown["results_url"] is None and shown["request_counts"]["canceled"] == 2
    assert all(result is None for *_, result in store.results(db, canceled.id, -1, 10))


def test_counts_stay_processing_until_the_batch_ends(db: sa.Engine) -> None:
    batch = make(db, 2)
    claimed = store.claim(db, "inst_a", 1, _ms())[0]
    store.finish(db, claimed.id, batch.id, "inst_a", SUCCEEDED, "{}")
    shown = batch_object(store.get(db, batch.id, None), store.counts(db, [batch.id])[batch.id], "u")  # type: ignore[arg-type]
    assert shown["request_counts"] == {"processing": 2, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert shown["processing_status"] == "in_progress" and shown["results_url"] is None


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "Request body is empty"),
        (b"[]", "Input should be an object"),
        (b'{"requests": {}}', "requests: Input should be a valid array"),
        (b'{"requests": [{"custom_id": "a", "params": {}}], "x": 1}', "x: Extra inputs are not permitted"),
        (b'{"requests": [{"custom_id": 5, "params": {}}]}', "requests.0.custom_id: Input should be a valid string"),
    ],
)
def test_the_create_body_is_checked_as_a_whole(body: bytes, message: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_create(body, 100)
    assert refused.value.status == 400 and message in refused.value.message


def test_a_batch_holds_at_most_max_requests() -> None:
    body = json.dumps({"requests": [{"custom_id": f"c{i}", "params": {}} for i in range(4)]}).encode()
    assert len(parse_create(body, 4)) == 4
    with pytest.raises(ApiError, match="at most 3 requests"):
        parse_create(body, 3)
