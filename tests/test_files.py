"""The Files API through the official SDK's `client.beta.files` against real servers.

The servers here load no model (their one model is a remote engine that is never asked): the Files
API needs none, and each server has the file settings it tests, a small size limit among them. The
file sources of image and document blocks are tested with the messages that use them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import anyio
import httpx
import pytest
import sqlalchemy as sa
from conftest import Server, launch, stop
from platform_backends import postgres_schema

from missive.files.service import FileMissing, FileService
from missive.files.storage import DiskStorage
from missive.settings import FileSettings
from missive.store import db as store_db
from missive.store import files as file_store
from missive.wire.files import FileRecord

LIGHT = """
models = []
default_model = "remote"

[console]
enabled = false

[[engines]]
name = "remote"
kind = "anthropic"
url = "http://127.0.0.1:9"

[[engines.models]]
id = "remote"
"""
MAX_BYTES = 64 * 1024
DOWNLOADABLE = LIGHT + f"\n[files]\nmax_bytes = {MAX_BYTES}\ndownloadable = true\n"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
API = {"anthropic-version": "2023-06-01"}
BETA = {**API, "anthropic-beta": "files-api-2025-04-14"}


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Uploads downloadable, at most 64 KiB."""
    process, server = launch(tmp_path_factory.mktemp("files"), DOWNLOADABLE, "files.log")
    try:
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The file settings left at their defaults."""
    process, server = launch(tmp_path_factory.mktemp("files-default"), LIGHT, "files-default.log")
    try:
        yield server
    finally:
        stop(process)


def sdk(server: Server, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=key or server.api_key, max_retries=0, timeout=30)


def workspace_key(server: Server, name: str) -> str:
    """An API key in a new workspace of its own (so that its file list holds only its own files)."""
    made = server.cli("keys", "create", "--admin", "--name", f"{name} admin")
    assert made.returncode == 0, made.stderr
    headers = {**API, "x-api-key": made.stdout.strip().splitlines()[-1]}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as admin:
        workspace = admin.post("/v1/organizations/workspaces", json={"name": name}).json()
        key = admin.post("/v1/organizations/api_keys", json={"name": name, "workspace_id": workspace["id"]})
    return key.json()["key"]


def stored_paths(server: Server) -> list[Path]:
    return [path for path in (server.data_dir / "files").rglob("*") if path.is_file()]


def raw(server: Server, key: str | None = None, headers: dict[str, str] = BETA) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={**headers, "x-api-key": key or server.api_key}, timeout=30)


def refusal(response: httpx.Response, status: int, error_type: str, *names: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers.get("request-id", "").startswith("req_")
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type, body
    for name in names:
        assert name in body["error"]["message"], body
    return body["error"]["message"]


# --- each route --------------------------------------------------------------------------------------


def test_a_file_is_uploaded_read_listed_downloaded_and_deleted(files_server: Server) -> None:
    client = sdk(files_server)
    data = "Missive keeps this file.\n".encode() * 40
    before = datetime.now(UTC) - timedelta(seconds=5)
    uploaded = client.beta.files.upload(file=("notes.txt", data, "text/plain"))
    assert uploaded.id.startswith("file_") and uploaded.type == "file"
    assert (uploaded.filename, uploaded.mime_type, uploaded.size_bytes) == ("notes.txt", "text/plain", len(data))
    assert uploaded.downloadable is True and uploaded.scope is None
    assert before <= uploaded.created_at <= datetime.now(UTC) + timedelta(seconds=5)

    assert client.beta.files.retrieve_metadata(uploaded.id) == uploaded
    assert uploaded.id in [listed.id for listed in client.beta.files.list(limit=1000)]
    assert client.beta.files.download(uploaded.id).read() == data
    assert any(path.name == uploaded.id and path.read_bytes() == data for path in stored_paths(files_server))

    deleted = client.beta.files.delete(uploaded.id)
    assert (deleted.id, deleted.type) == (uploaded.id, "file_deleted")
    assert not any(path.name == uploaded.id for path in stored_paths(files_server)), "the bytes stay on disk"
    for gone in (client.beta.files.retrieve_metadata, client.beta.files.download, client.beta.files.delete):
        with pytest.raises(anthropic.NotFoundError) as caught:
            gone(uploaded.id)
        assert caught.value.body["error"]["type"] == "not_found_error"
        assert uploaded.id in caught.value.body["error"]["message"]
    assert uploaded.id not in [listed.id for listed in client.beta.files.list(limit=1000)]


def test_the_download_is_the_bytes_with_the_files_type_and_name(files_server: Server) -> None:
    uploaded = sdk(files_server).beta.files.upload(file=("pixel één.png", PNG, "image/png"))
    with raw(files_server) as http:
        response = http.get(f"/v1/files/{uploaded.id}/content")
    assert response.status_code == 200 and response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(PNG))
    assert "filename*=UTF-8''pixel%20%C3%A9%C3%A9n.png" in response.headers["content-disposition"]


def test_the_media_type_comes_from_the_part_else_the_bytes_else_the_name(files_server: Server, tmp_path: Path) -> None:
    client = sdk(files_server)
    assert client.beta.files.upload(file=("upload", PNG)).mime_type == "image/png"  # sent as octet-stream
    assert client.beta.files.upload(file=("paper", b"%PDF-1.7\n...")).mime_type == "application/pdf"
    assert client.beta.files.upload(file=("data.csv", b"a,b\n1,2\n")).mime_type == "text/csv"
    assert client.beta.files.upload(file=("blob", b"\x00\x01\x02")).mime_type == "application/octet-stream"
    path = tmp_path / "report.md"
    path.write_text("# Report\n")
    from_path = client.beta.files.upload(file=path)  # the SDK sends the path's name
    assert (from_path.filename, from_path.mime_type, from_path.size_bytes) == ("report.md", "text/markdown", 9)


def test_the_list_pages_newest_first_in_both_directions(files_server: Server) -> None:
    key = workspace_key(files_server, "paging")
    client = sdk(files_server, key)
    ids = [client.beta.files.upload(file=(f"f{i}.txt", f"file {i}".encode(), "text/plain")).id for i in range(5)]
    newest_first = ids[::-1]

    # anthropic 1.x's client.beta.files sends no beta header: it pages the generally available way.
    first = client.beta.files.list(limit=2)
    assert [f.id for f in first.data] == newest_first[:2] and first.next_page
    assert [f.id for f in client.beta.files.list(limit=2)] == newest_first  # the SDK follows next_page
    assert [f.id for f in client.beta.files.list(ids=[ids[1], ids[3]])] == [ids[3], ids[1]]
    assert client.beta.files.list(scope_id="sesn_x").data == []  # files uploaded here have no scope

    def page(**params: object) -> tuple[list[str], bool, str | None, str | None]:
        body = http.get("/v1/files", params=params).json()
        return [f["id"] for f in body["data"]], body["has_more"], body["first_id"], body["last_id"]

    with raw(files_server, key) as http:  # with the beta header, pages go by id
        assert page(limit=2) == (newest_first[:2], True, newest_first[0], newest_first[1])
        assert page(limit=10, after_id=newest_first[1])[:2] == (newest_first[2:], False)
        assert page(limit=2, before_id=newest_first[4])[:2] == (newest_first[2:4], True)
        assert page(limit=10, before_id=newest_first[2])[0] == newest_first[:2]
        assert page(after_id=newest_first[-1]) == ([], False, None, None)
        assert page(after_id="file_nosuchfile")[0] == []
        for limit in ("0", "1001", "x"):
            refusal(http.get("/v1/files", params={"limit": limit}), 400, "invalid_request_error", "limit")


def test_without_the_beta_header_the_generally_available_shapes_are_served(files_server: Server) -> None:
    key = workspace_key(files_server, "ga")
    client = sdk(files_server, key)
    ids = [client.beta.files.upload(file=(f"g{i}.txt", b"x", "text/plain")).id for i in range(3)]
    with raw(files_server, key, API) as http:
        one = http.get(f"/v1/files/{ids[0]}").json()
        assert one["id"] == ids[0] and "expires_at" in one and one["expires_at"] is None
        first = http.get("/v1/files", params={"limit": 2}).json()
        assert [f["id"] for f in first["data"]] == ids[:0:-1] and first["next_page"].startswith("page_")
        assert set(first) == {"data", "next_page"}
        rest = http.get("/v1/files", params={"limit": 2, "page": first["next_page"]}).json()
        assert [f["id"] for f in rest["data"]] == ids[:1] and rest["next_page"] is None
        chosen = http.get("/v1/files", params=[("ids[]", ids[0]), ("ids[]", ids[2]), ("ids[]", "file_gone")]).json()
        assert [f["id"] for f in chosen["data"]] == [ids[2], ids[0]] and chosen["next_page"] is None
        refusal(http.get("/v1/files", params={"after_id": ids[0]}), 400, "invalid_request_error", "after_id", "page")
        refusal(http.get("/v1/files", params={"page": "page_!!"}), 400, "invalid_request_error", "page")
        too_many = [("ids", f"file_{i}") for i in range(101)]
        refusal(http.get("/v1/files", params=too_many), 400, "invalid_request_error", "ids")
        with_page = [("ids", ids[0]), ("limit", "2")]
        refusal(http.get("/v1/files", params=with_page), 400, "invalid_request_error", "ids")
        assert http.get(f"/v1/files/{ids[0]}?beta=true").status_code == 200


# --- workspaces and limits ---------------------------------------------------------------------------


def test_another_workspaces_file_is_not_found(files_server: Server) -> None:
    owner = sdk(files_server, workspace_key(files_server, "owner"))
    other = sdk(files_server, workspace_key(files_server, "other"))
    mine = owner.beta.files.upload(file=("secret.txt", b"the owner's", "text/plain"))
    for attempt in (other.beta.files.retrieve_metadata, other.beta.files.download, other.beta.files.delete):
        with pytest.raises(anthropic.NotFoundError) as caught:
            attempt(mine.id)
        assert caught.value.body["error"]["type"] == "not_found_error"
    assert mine.id not in [f.id for f in other.beta.files.list(limit=1000)]
    with raw(files_server, other.api_key) as http:  # another's id is no cursor either
        assert http.get("/v1/files", params={"after_id": mine.id}).json()["data"] == []
    assert owner.beta.files.download(mine.id).read() == b"the owner's"  # the failed delete left it alone


def test_an_upload_over_the_limit_is_413_and_leaves_nothing_behind(files_server: Server) -> None:
    client = sdk(files_server)
    assert client.beta.files.upload(file=("edge.bin", b"e" * MAX_BYTES)).size_bytes == MAX_BYTES
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.beta.files.upload(file=("over.bin", b"o" * (MAX_BYTES + 1)))
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert str(MAX_BYTES) in caught.value.body["error"]["message"]
    port = int(files_server.base_url.rsplit(":", 1)[1])  # refused from its declared length, before the body comes
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: x\r\nx-api-key: {files_server.api_key}\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-type: multipart/form-data; boundary=x\r\n"
            f"content-length: {10 * MAX_BYTES + 2**21}\r\n\r\n--x\r\n".encode()
        )
        answer = ""
        while "}" not in answer and (chunk := conn.recv(65536)):
            answer += chunk.decode()
    assert answer.startswith("HTTP/1.1 413") and "request_too_large" in answer, answer
    assert list((files_server.data_dir / "files" / "tmp").iterdir()) == []


def test_bad_multipart_bodies_are_400s_that_say_what_is_wrong(files_server: Server) -> None:
    boundary = "b0und"
    multipart = {"content-type": f"multipart/form-data; boundary={boundary}"}

    def part(name: str, value: bytes, filename: str | None = "a.txt") -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"

    end = f"--{boundary}--\r\n".encode()
    with raw(files_server) as http:
        refusal(http.post("/v1/files", json={"file": "x"}), 400, "invalid_request_error", "Content-Type", "multipart")
        refusal(http.post("/v1/files", headers={"content-type": "multipart/form-data"}, content=b""), 400,
                "invalid_request_error", "boundary")  # fmt: skip
        cases = {
            "no file part": (part("other", b"1", None) + end, ("other", "unexpected")),
            "no parts": (end, ("file", "required")),
            "a plain field named file": (part("file", b"text", None) + end, ("file", "filename")),
            "two files": (part("file", b"1") + part("file", b"2") + end, ("file", "one file")),
            "a truncated body": (part("file", b"123")[:-2], ("multipart",)),
            "garbage": (b"this is not multipart at all", ("multipart",)),
            "a slash in the name": (part("file", b"1", "dir/evil.txt") + end, ("file", "filename")),
            "an empty name": (part("file", b"1", "") + end, ("file", "filename")),
            "a bad expiry": (part("file", b"1") + part("expires_in_seconds", b"soon", None) + end, ("expires_in_seconds",)),
        }  # fmt: skip
        for case, (body, names) in cases.items():
            response = http.post("/v1/files", headers=multipart, content=body)
            assert response.status_code == 400, f"{case}: {response.status_code} {response.text}"
            refusal(response, 400, "invalid_request_error", *names)
        refusal(http.get("/v1/files/nonsense/../x"), 404, "not_found_error")
    with raw(files_server, "sk-missive-wrong") as http:
        refusal(http.get("/v1/files"), 401, "authentication_error")
    assert list((files_server.data_dir / "files" / "tmp").iterdir()) == []


def test_a_file_that_expires_is_gone_with_its_bytes(files_server: Server) -> None:
    key = workspace_key(files_server, "expiry")
    with raw(files_server, key, API) as http:
        made = http.post("/v1/files", files={"file": ("brief.txt", b"short-lived", "text/plain")},
                         data={"expires_in_seconds": "1"})  # fmt: skip
        assert made.status_code == 200, made.text
        made = made.json()
        created = datetime.fromisoformat(made["created_at"])
        assert datetime.fromisoformat(made["expires_at"]) == created + timedelta(seconds=1)
        time.sleep(1.5)
        refusal(http.get(f"/v1/files/{made['id']}"), 404, "not_found_error", made["id"])
        assert http.get("/v1/files").json()["data"] == []
        http.post("/v1/files", files={"file": ("next.txt", b"x", "text/plain")})  # an upload sweeps expired files
    assert not any(path.name == made["id"] for path in stored_paths(files_server))


def test_the_operator_lists_shows_and_deletes_files_from_the_command_line(files_server: Server) -> None:
    data = b"seen by the operator"
    uploaded = sdk(files_server, workspace_key(files_server, "cli")).beta.files.upload(file=("op.txt", data, "text/plain"))
    listed = files_server.cli("files", "list")
    assert listed.returncode == 0 and uploaded.id in listed.stdout and "op.txt" in listed.stdout, listed.stderr
    shown = files_server.cli("files", "show", uploaded.id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["sha256"] == hashlib.sha256(data).hexdigest()
    assert files_server.cli("files", "delete", uploaded.id).returncode == 0
    again = files_server.cli("files", "show", uploaded.id)
    assert again.returncode != 0 and uploaded.id in again.stderr
    assert not any(path.name == uploaded.id for path in stored_paths(files_server))


# --- the defaults --------------------------------------------------------------------------------------


def test_uploads_are_not_downloadable_by_default_as_on_the_claude_api(default_server: Server) -> None:
    client = sdk(default_server)
    uploaded = client.beta.files.upload(file=("doc.txt", b"kept, not handed back", "text/plain"))
    assert uploaded.downloadable is False
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.files.download(uploaded.id)
    message = caught.value.body["error"]["message"]
    assert uploaded.id in message and "files.downloadable" in message
    assert (default_server.data_dir / "files").is_dir()  # the default place: data_dir/files
    big = os.urandom(5 * 1024 * 1024 + 7)  # several flushes to disk and several chunks of the body
    stored = client.beta.files.upload(file=("big.bin", big))
    assert stored.size_bytes == len(big) and stored.mime_type == "application/octet-stream"
    shown = json.loads(default_server.cli("files", "show", stored.id).stdout)
    assert shown["sha256"] == hashlib.sha256(big).hexdigest()
    assert [p.read_bytes() == big for p in stored_paths(default_server) if p.name == stored.id] == [True]
    with raw(default_server) as http:
        metrics = http.get("/metrics").text
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line.startswith("missive_file"))
    assert float(values["missive_files_uploaded_total"]) == 2
    assert float(values["missive_file_bytes_uploaded_total"]) == len(big) + 21


# --- what the Messages pipeline reads ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_schema()) if request.param == "postgresql" else tmp_path / "store.db"
        engine = store_db.connect(url)
        stack.callback(engine.dispose)
        yield engine


def test_the_store_pages_files_of_one_workspace_on_both_backends(database: sa.Engine) -> None:
    start = datetime.now(UTC)
    ids = [f"file_{i:02d}" for i in range(6)]
    for i, file_id in enumerate(ids):  # two files per instant: the id breaks the tie
        moment = start + timedelta(seconds=i // 2)
        file_store.insert(database, FileRecord(file_id, "wrk_a", "key", f"{i}.txt", "text/plain", i, "0" * 64, moment))
    file_store.insert(database, FileRecord("file_other", "wrk_b", "key", "b.txt", "text/plain", 1, "0" * 64, start))
    newest = ids[::-1]
    at = start + timedelta(minutes=1)
    assert file_store.page(database, "wrk_a", at, 4) == ([file_store.get(database, i, "wrk_a", at) for i in newest[:4]], True)
    assert [r.id for r in file_store.page(database, "wrk_a", at, 2, after_id=newest[1])[0]] == newest[2:4]
    assert [r.id for r in file_store.page(database, "wrk_a", at, 9, after_id=newest[3])[0]] == newest[4:]
    back, more = file_store.page(database, "wrk_a", at, 2, before_id=newest[4])
    assert ([r.id for r in back], more) == (newest[2:4], True)
    assert file_store.page(database, "wrk_a", at, 2, after_id="file_other") == ([], False)
    assert [r.id for r in file_store.among(database, "wrk_a", at, ["file_00", "file_other", "file_05"])] == ["file_05", "file_00"]
    assert file_store.totals(database, "wrk_a") == (6, 15)


def test_open_reads_a_workspaces_file_and_nothing_else(database: sa.Engine, tmp_path: Path) -> None:
    service = FileService(database, FileSettings(max_bytes=1000), DiskStorage(tmp_path / "files"))

    async def body(data: bytes) -> object:
        boundary = b"zz"
        yield b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n"
        yield b"Content-Type: application/pdf\r\n\r\n" + data + b"\r\n--" + boundary + b"--\r\n"

    async def scenario() -> None:
        await service.start()
        record = await service.upload("wrk_a", "key_a", "multipart/form-data; boundary=zz", None, body(b"%PDF-1.4 x"))
        stored = await service.open("wrk_a", record.id)
        assert (stored.id, stored.filename, stored.mime_type, stored.size_bytes) == (record.id, "a.pdf", "application/pdf", 10)
        assert stored.data == b"%PDF-1.4 x"
        for workspace, file_id in (("wrk_b", record.id), ("wrk_a", "file_none"), ("wrk_a", "../store.db")):
            with pytest.raises(FileMissing) as caught:
                await service.open(workspace, file_id)
            assert caught.value.file_id == file_id
        await service.delete("wrk_a", record.id)
        with pytest.raises(FileMissing):
            await service.open("wrk_a", record.id)

    anyio.run(scenario)
    assert file_store.totals(database) == (0, 0)
