"""Attachments (issue 14): SDK-shaped ``send(attachments=...)``, checked before queuing;
bytes stored once per content and referenced by ``user.message``; images re-sent on later
turns, after resume (in a fresh process) and in forks; released with the last session."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

# a real kernel for the %%copilot -a tests: test_magics_kernel's module-scoped fixture
from test_magics_kernel import kernel  # noqa: F401

from copilot import AsyncCopilotClient, CopilotClient
from copilot.attachments import DEFAULT_MAX_BYTES, resolve_attachments
from copilot.errors import (
    AttachmentError,
    AttachmentNotFoundError,
    AttachmentTooLargeError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    VisionNotSupportedError,
)
from copilot.events import EventType
from copilot.store import EventStore
from copilot.testing import Reply, ScriptedAnthropicServer

KEY = "sk-test-attach-0123456789"


def png(width: int = 3, height: int = 2, seed: int = 0) -> bytes:
    """A real (tiny) PNG: RGB pixels varying with ``seed``, so contents differ per seed."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(
        b"\x00" + bytes((x * 40 + seed) % 256 for x in range(width * 3)) for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def blob(data: bytes, name: str = "plot.png", mime: str = "image/png") -> dict:
    return {
        "type": "blob",
        "data": base64.b64encode(data).decode(),
        "mimeType": mime,
        "displayName": name,
    }


def blob_keys(home: str) -> dict[str, list[str]]:
    """The store's attachment keys by kind (read with a second connection to the directory)."""
    store = EventStore(Path(home) / "sessions")
    try:
        keys = [
            k for k in store._cache.iterkeys() if k.split("/")[0] in ("blob", "blobref", "sblob")
        ]
    finally:
        store.close()
    found: dict[str, list[str]] = {"blob": [], "blobref": [], "sblob": []}
    for key in keys:
        found[key.split("/")[0]].append(key)
    return found


def image_urls(body: dict) -> list[str]:
    """Every ``image_url`` data URI of a Chat Completions request body, in order."""
    return [
        part["image_url"]["url"]
        for m in body["messages"]
        if isinstance(m["content"], list)
        for part in m["content"]
        if part.get("type") == "image_url"
    ]


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture
def openai_env(monkeypatch, openai_server):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    return openai_server


def chat(server) -> list[dict]:
    return [r.json for r in server.requests if r.path.endswith("/chat/completions")]


# -- checking before queuing ---------------------------------------------------------------


def test_unknown_type_bad_base64_and_missing_file_are_typed_and_named(tmp_path):
    with pytest.raises(
        AttachmentError, match=r"unknown attachment type 'image'.*\"file\".*\"blob\""
    ):
        resolve_attachments([{"type": "image", "path": "x.png"}])
    with pytest.raises(AttachmentError, match=r"not valid base64.*b64encode"):
        resolve_attachments([{"type": "blob", "data": "not base64!!", "mimeType": "image/png"}])
    with pytest.raises(AttachmentError, match="mimeType"):
        resolve_attachments([{"type": "blob", "data": "aGk="}])
    missing = tmp_path / "nowhere.png"
    with pytest.raises(AttachmentNotFoundError, match=r"nowhere\.png.*does not exist"):
        resolve_attachments([{"type": "file", "path": str(missing)}])
    with pytest.raises(InvalidArgumentTypeError, match="list of dicts"):
        resolve_attachments("plot.png")
    with pytest.raises(AttachmentError, match="neither an image nor UTF-8 text"):
        resolve_attachments([blob(b"\x00\x01\x02binary", "x.bin", "application/octet-stream")])
    # an image type whose bytes are not that image is refused, not sent as garbage
    with pytest.raises(AttachmentError, match="not a png image"):
        resolve_attachments([blob(b"hello", "fake.png")])


def test_kinds_are_sniffed_from_bytes_and_the_same_content_is_kept_once(tmp_path):
    image = png()
    named_txt = tmp_path / "really-a-png.txt"
    named_txt.write_bytes(image)
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\nhello", encoding="utf-8")
    found = resolve_attachments(
        [{"type": "file", "path": str(named_txt)}, blob(image), {"type": "file", "path": notes}]
    )
    assert [(a.mime_type, a.display_name) for a in found] == [
        ("image/png", "really-a-png.txt"),
        ("text/plain", "notes.md"),
    ]
    assert found[0].sha256 == hashlib.sha256(image).hexdigest()
    assert found[0].reference() == {
        "type": "image",
        "sha256": hashlib.sha256(image).hexdigest(),
        "mimeType": "image/png",
        "displayName": "really-a-png.txt",
        "size": len(image),
    }


def test_the_cap_is_a_boundary_and_configurable(tmp_path):
    assert DEFAULT_MAX_BYTES == 20 * 2**20
    at = tmp_path / "at.txt"
    at.write_text("a" * 1000)
    over = tmp_path / "over.txt"
    over.write_text("a" * 1001)
    assert resolve_attachments([{"type": "file", "path": at}], max_bytes=1000)[0].size == 1000
    with pytest.raises(
        AttachmentTooLargeError, match=r"1,001 bytes, over the cap of 1,000"
    ) as info:
        resolve_attachments([{"type": "file", "path": over}], max_bytes=1000)
    assert (info.value.size, info.value.limit) == (1001, 1000)
    encoded = blob(b"b" * 1001, "b.txt", "text/plain")
    with pytest.raises(AttachmentTooLargeError):
        resolve_attachments([encoded], max_bytes=1000)
    assert resolve_attachments([blob(b"b" * 1000, "b.txt", "text/plain")], max_bytes=1000)


def test_a_30_mb_attachment_is_refused_with_nothing_stored(make_client, home, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png() + b"\x00" * (30 * 2**20))
    client = make_client(fallback_model="echo")
    session = client.create_session("big", model="echo")
    before = client.get_messages("big")
    with pytest.raises(
        AttachmentTooLargeError,
        match=r"big.png.*over the cap of 20,971,520 bytes.*nothing was stored",
    ):
        session.send("look", attachments=[{"type": "file", "path": str(big)}])
    encoded = base64.b64encode(big.read_bytes()).decode()
    with pytest.raises(AttachmentTooLargeError):
        session.send_and_wait(
            "look", attachments=[{"type": "blob", "data": encoded, "mimeType": "image/png"}]
        )
    assert client.get_messages("big") == before  # no user.message
    assert client.get_session_metadata("big")["turnCount"] == 0
    assert blob_keys(home) == {"blob": [], "blobref": [], "sblob": []}
    # the session still works
    assert session.send_and_wait("still here").data["content"] == "echo: still here"


def test_a_vision_less_model_is_refused_before_anything_is_sent(
    make_client, openai_server, monkeypatch, home
):
    monkeypatch.setenv("OPENAI_COMPATIBLE_BASE_URL", openai_server.base_url)
    client = make_client(fallback_model="echo")
    session = client.create_session("blind", model="openai-compatible:tiny")
    with pytest.raises(
        VisionNotSupportedError,
        match=r"openai-compatible:tiny cannot read images.*'plot.png' is an image.*nothing was sent.*echo",
    ) as info:
        session.send_and_wait("what is this?", attachments=[blob(png())])
    assert info.value.model == "openai-compatible:tiny"
    assert chat(openai_server) == []
    assert [e.type for e in client.get_messages("blind")] == [EventType.SESSION_START]
    assert blob_keys(home)["blob"] == []
    # text attachments need no vision: they go inline, under a header naming the file
    openai_server.enqueue(Reply(chunks=["ok"]))
    session.send_and_wait("summarise", attachments=[blob(b"a,b\n1,2\n", "data.csv", "text/csv")])
    sent = chat(openai_server)[-1]["messages"][-1]["content"]
    assert sent == "summarise\n\n[attached file: data.csv]\na,b\n1,2\n\n[end of data.csv]"


def test_list_models_says_which_models_see(make_client, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    models = {m["id"]: m["vision"] for m in make_client().list_models()}
    assert models["echo"] is True
    assert models["openai:gpt-4.1"] is True and models["openai:gpt-4o"] is True
    assert models["openai:gpt-3.5-turbo"] is False
    assert all(v is False for k, v in models.items() if k.startswith("local:"))
    assert any(k.startswith("anthropic:claude") and v for k, v in models.items())


# -- storage: once per content, referenced, released with the last session -----------------


def test_an_attachment_is_stored_once_for_two_sessions_and_deleted_with_the_last(make_client, home):
    image = png()
    sha = hashlib.sha256(image).hexdigest()
    client = make_client(fallback_model="echo")
    a = client.create_session("a", model="echo")
    b = client.create_session("b", model="echo")
    reply = a.send_and_wait("see", attachments=[blob(image)])
    assert (
        reply.data["content"]
        == f"echo: see\n[image plot.png: image/png, {len(image)} bytes, sha256 {sha[:12]}]"
    )
    b.send_and_wait("same", attachments=[blob(image, "other-name.png")])
    user = next(e for e in client.get_messages("a") if e.type == EventType.USER_MESSAGE)
    assert user.data["attachments"] == [
        {
            "type": "image",
            "sha256": sha,
            "mimeType": "image/png",
            "displayName": "plot.png",
            "size": len(image),
        }
    ]
    assert "data" not in json.dumps(user.data["attachments"])
    keys = blob_keys(home)
    assert keys["blob"] == [f"blob/{sha}"]
    assert sorted(keys["blobref"]) == [f"blobref/{sha}/a", f"blobref/{sha}/b"]
    assert client.check() == []  # the attachment keys are not damage
    client.delete_session("a")
    assert blob_keys(home)["blob"] == [f"blob/{sha}"]
    client.delete_session("b")
    assert blob_keys(home) == {"blob": [], "blobref": [], "sblob": []}
    assert client.check() == []


def test_a_fork_shares_the_attachment_and_keeps_it_alive(make_client, home):
    image = png(seed=7)
    sha = hashlib.sha256(image).hexdigest()
    client = make_client(fallback_model="echo")
    source = client.create_session("src", model="echo")
    source.send_and_wait("see", attachments=[blob(image)])
    fork = client.fork_session("src", "fork")
    client.delete_session("src")
    assert blob_keys(home)["blob"] == [f"blob/{sha}"]
    client.get_provider("echo").requests.clear()
    fork.send_and_wait("and again?")
    request = client.get_provider("echo").requests[-1]
    assert [a.data for m in request.messages for a in m.attachments] == [image]
    client.delete_session("fork")
    assert blob_keys(home)["blob"] == []


# -- providers: image parts on the wire, re-sent on later turns and after resume -----------


def test_openai_request_holds_the_exact_png_and_later_turns_resend_it(make_client, openai_env):
    image = png(seed=3)
    client = make_client(fallback_model="echo")
    session = client.create_session("o", model="openai:gpt-4.1")
    openai_env.enqueue(Reply(chunks=["a plot"]), Reply(chunks=["yes"]))
    session.send_and_wait("what is it?", attachments=[blob(image)])
    first = chat(openai_env)[-1]
    assert first["messages"][-1]["content"][0] == {"type": "text", "text": "what is it?"}
    assert image_urls(first) == [data_uri(image)]
    session.send_and_wait("sure?")
    second = chat(openai_env)[-1]
    assert image_urls(second) == [data_uri(image)]
    assert second["messages"][-1] == {"role": "user", "content": "sure?"}


RESUME = textwrap.dedent(
    """
    import json, sys
    from copilot import CopilotClient
    with CopilotClient(base_directory=sys.argv[1], fallback_model="echo") as client:
        session = client.resume_session(sys.argv[2])
        print(json.dumps(session.send_and_wait("and now?").data["content"]))
    """
)


@pytest.mark.timeout(120)
def test_a_fresh_process_resumes_and_resends_the_image(make_client, openai_env, home):
    image = png(seed=11)
    client = make_client(fallback_model="echo")
    session = client.create_session("r", model="openai:gpt-4.1")
    openai_env.enqueue(Reply(chunks=["seen"]), Reply(chunks=["resumed"]))
    session.send_and_wait("look", attachments=[blob(image)])
    client.stop()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", RESUME, home, "r"],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == "resumed"
    last = chat(openai_env)[-1]
    assert image_urls(last) == [data_uri(image)]
    assert last["messages"][-1] == {"role": "user", "content": "and now?"}


@pytest.mark.timeout(60)
def test_anthropic_request_holds_an_image_block(make_client, monkeypatch):
    image = png(seed=5)
    with ScriptedAnthropicServer() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        server.enqueue(Reply(chunks=["a plot"]))
        client = make_client(fallback_model="echo")
        session = client.create_session("c", model="anthropic:claude-vision-test")
        session.send_and_wait("what?", attachments=[blob(image)])
        body = [r.json for r in server.requests if r.path.endswith("/messages")][-1]
    assert body["messages"][-1] == {
        "role": "user",
        "content": [
            {
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": "image/png",
                    "data": base64.b64encode(image).decode(),
                },
            },
            {"type": "text", "text": "what?"},
        ],
    }


def test_the_async_face_takes_attachments_and_checks_them(home):
    image = png(seed=9)

    async def go() -> tuple[str, type]:
        async with AsyncCopilotClient(base_directory=home, fallback_model="echo") as client:
            session = await client.create_session(model="echo")
            reply = await session.send_and_wait("see", attachments=[blob(image)])
            try:
                await session.send("x", attachments=[{"type": "nope"}])
            except AttachmentError as exc:
                return reply.data["content"], type(exc)
            return reply.data["content"], type(None)

    content, error = asyncio.run(go())
    assert content.startswith("echo: see\n[image plot.png: image/png") and error is AttachmentError


def test_the_dict_form_carries_attachments_like_the_sdk(client):
    session = client.create_session(model="echo")
    reply = session.send_and_wait({"prompt": "see", "attachments": [blob(png())]})
    assert "[image plot.png" in reply.data["content"]


def test_a_model_change_to_one_that_cannot_see_leaves_the_image_out_and_says_so(
    make_client, openai_server, monkeypatch
):
    monkeypatch.setenv("OPENAI_COMPATIBLE_BASE_URL", openai_server.base_url)
    client = make_client(fallback_model="echo")
    session = client.create_session("m", model="echo")
    session.send_and_wait("see", attachments=[blob(png())])
    session.set_model("openai-compatible:tiny")
    openai_server.enqueue(Reply(chunks=["ok"]))
    session.send_and_wait("next")
    first_user = chat(openai_server)[-1]["messages"][0]
    assert first_user == {
        "role": "user",
        "content": "see\n\n[image plot.png left out: this model cannot see images]",
    }


def test_the_client_refuses_a_bad_cap(home):
    with pytest.raises(InvalidArgumentTypeError):
        CopilotClient(base_directory=home, max_attachment_bytes="20MB")
    with pytest.raises(AttachmentError, match="positive"):
        CopilotClient(base_directory=home, max_attachment_bytes=0)


# -- both stores ----------------------------------------------------------------------------


@pytest.fixture(params=["diskcache", "postgres"])
def store_under_test(request, home):
    """``(client kwargs, stored())``: stored() lists the stored blobs' sha256 and the
    (sha256, session) references, read straight from the store's tables or keys."""
    if request.param == "diskcache":

        def stored() -> tuple[list[str], list[tuple[str, str]]]:
            keys = blob_keys(home)
            refs = sorted(tuple(k.split("/")[1:]) for k in keys["blobref"])
            return sorted(k.split("/")[1] for k in keys["blob"]), refs

        return {}, stored
    import psycopg

    url = request.getfixturevalue("postgres_server").new_database()

    def stored_pg() -> tuple[list[str], list[tuple[str, str]]]:
        with psycopg.connect(url, autocommit=True) as conn:
            blobs = [r[0] for r in conn.execute("SELECT sha256 FROM copilot_blobs ORDER BY 1")]
            refs = [
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT sha256, session_id FROM copilot_blob_refs ORDER BY 1, 2"
                )
            ]
        return blobs, refs

    return {"store": url, "owner": "tester"}, stored_pg


@pytest.mark.timeout(120)
def test_both_stores_keep_one_copy_share_it_with_forks_and_drop_it_with_the_last(
    make_client, store_under_test
):
    kwargs, stored = store_under_test
    image, other = png(seed=21), png(seed=22)
    sha, sha_other = hashlib.sha256(image).hexdigest(), hashlib.sha256(other).hexdigest()
    client = make_client(fallback_model="echo", **kwargs)
    a = client.create_session("a", model="echo")
    b = client.create_session("b", model="echo")
    a.send_and_wait("one", attachments=[blob(image)])
    a.send_and_wait("again", attachments=[blob(image), blob(other, "other.png")])
    b.send_and_wait("two", attachments=[blob(image)])
    assert stored() == (
        sorted([sha, sha_other]),
        sorted([(sha, "a"), (sha, "b"), (sha_other, "a")]),
    )
    client.fork_session("a", "f")
    client.delete_session("a")
    assert stored() == (
        sorted([sha, sha_other]),
        sorted([(sha, "b"), (sha, "f"), (sha_other, "f")]),
    )
    echo = client.get_provider("echo")
    echo.requests.clear()
    client.resume_session("f").send_and_wait("still there?")
    assert [a.data for m in echo.requests[-1].messages for a in m.attachments] == [
        image,
        image,
        other,
    ]
    client.delete_session("f")
    assert stored() == ([sha], [(sha, "b")])
    client.delete_session("b")
    assert stored() == ([], [])


@pytest.mark.timeout(120)
def test_both_stores_refuse_30_mb_with_nothing_stored(make_client, store_under_test, tmp_path):
    kwargs, stored = store_under_test
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (30 * 2**20))
    client = make_client(fallback_model="echo", **kwargs)
    session = client.create_session("big", model="echo")
    with pytest.raises(AttachmentTooLargeError):
        session.send_and_wait("read", attachments=[{"type": "file", "path": str(big)}])
    assert stored() == ([], [])
    assert [e.type for e in client.get_messages("big")] == [EventType.SESSION_START]


RESUME_PG = textwrap.dedent(
    """
    import json, sys
    from copilot import CopilotClient
    with CopilotClient(base_directory=sys.argv[1], fallback_model="echo", store=sys.argv[3],
                       owner="tester") as client:
        session = client.resume_session(sys.argv[2])
        print(json.dumps(session.send_and_wait("and now?").data["content"]))
    """
)


@pytest.mark.timeout(120)
def test_a_fresh_process_resumes_from_postgres_and_resends_the_image(
    make_client, openai_env, home, postgres_server
):
    url = postgres_server.new_database()
    image = png(seed=31)
    client = make_client(fallback_model="echo", store=url, owner="tester")
    session = client.create_session("r", model="openai:gpt-4.1")
    openai_env.enqueue(Reply(chunks=["seen"]), Reply(chunks=["resumed"]))
    session.send_and_wait("look", attachments=[blob(image)])
    client.stop()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", RESUME_PG, home, "r", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == "resumed"
    assert image_urls(chat(openai_env)[-1]) == [data_uri(image)]


# -- %%copilot -a: figures and files from a real kernel ------------------------------------


def test_a_fig_or_out_n_without_an_image_is_a_typed_error_naming_the_fix():
    from copilot_jupyter.figures import FigureLog, attachment_for

    figures = FigureLog()
    with pytest.raises(AttachmentError, match=r"-a fig: no figure has been shown.*plt\.plot"):
        attachment_for("fig", figures, {})
    with pytest.raises(AttachmentError, match=r"-a Out\[4\]: cell 4 showed no image"):
        attachment_for("Out[4]", figures, {4: "just text"})
    image = base64.b64encode(png()).decode()
    figures.record(image[:10] + "\n" + image[10:], 4)  # wrapped as a front end may wrap it
    assert attachment_for("fig", figures, {}) == {
        "type": "blob",
        "data": image,
        "mimeType": "image/png",
        "displayName": "Out[4].png",
    }
    assert attachment_for("Out[4]", figures, {})["data"] == image
    assert attachment_for("notes.txt", figures, {}) == {"type": "file", "path": "notes.txt"}


@pytest.mark.timeout(300)
def test_a_matplotlib_figure_in_a_real_kernel_goes_as_an_image_url_with_its_png_bytes(
    kernel,  # noqa: F811  (the fixture imported above)
    tmp_path_factory,
):
    """A real kernel (jupyter_client): a figure drawn with the inline backend, then
    ``%%copilot -a fig`` and ``-a Out[n]`` and ``-a PATH``: the scripted server's requests
    hold image_url parts with exactly the PNG the kernel displayed."""
    from copilot.testing import ScriptedOpenAIServer

    k = kernel
    k.run("%load_ext copilot_jupyter")
    notes = tmp_path_factory.mktemp("files") / "notes.md"
    notes.write_text("# findings\nthe curve rises", encoding="utf-8")
    with ScriptedOpenAIServer() as server:
        server.enqueue(Reply("a rising line"), Reply("the same"), Reply("read it"))
        k.run(
            "from copilot import CopilotClient\n"
            "from copilot_jupyter.state import CopilotState, reset_state\n"
            "_before = reset_state(CopilotState(CopilotClient(providers={'openai': "
            f"{{'base_url': {server.base_url!r}}}}})))"
        )
        try:
            drawn = k.run(
                "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                "plt.plot([1, 2, 4])\nplt.title('rise')"
            )
            n = drawn.reply["execution_count"]
            shown = [
                m["content"]["data"]["image/png"]
                for m in drawn.of_type("display_data")
                if "image/png" in m["content"]["data"]
            ]
            assert len(shown) == 1
            k.run("%%copilot plots -m gpt-4.1 -a fig\nWhat does this show?")
            k.run(f"%%copilot plots -a Out[{n}]\nAnd this one?")
            k.run(f"%%copilot plots -a {notes}\nAnd the notes?")
            missing = k.run("%%copilot plots -a Out[9999]\nThis?")
        finally:
            k.run("_now = reset_state(_before)\n_now.client.stop(timeout=5)")
    expected = "data:image/png;base64," + "".join(shown[0].split())
    first, second, third = chat(server)
    assert image_urls(first) == [expected]
    assert first["messages"][-1]["content"][0] == {"type": "text", "text": "What does this show?"}
    # the second turn re-sends the first image (history) and sends Out[n] (the same bytes)
    assert image_urls(second) == [expected, expected]
    assert third["messages"][-1] == {
        "role": "user",
        "content": "And the notes?\n\n[attached file: notes.md]\n# findings\nthe curve rises\n"
        "[end of notes.md]",
    }
    assert "Out[9999]: cell 9999 showed no image" in missing.text


# -- export: images shown in .md and .ipynb ---------------------------------------------------


def test_exports_show_images_and_name_text_files(client, tmp_path):
    import nbformat

    from copilot_jupyter.export import export_session

    image = png(seed=41)
    sha = hashlib.sha256(image).hexdigest()
    session = client.create_session("shown", model="echo")
    session.send_and_wait(
        "what is it?",
        attachments=[blob(image, "Out[3].png"), blob(b"x,y\n1,2\n", "data.csv", "text/csv")],
    )
    events = client.get_messages("shown")
    metadata = client.get_session_metadata("shown")
    load = client.get_attachment
    assert load(sha) == image

    md = export_session("shown", events, tmp_path / "chat.md", metadata, load_blob=load)
    text = md.read_text()
    assert f"what is it?\n\n![Out\\[3\\].png](chat_files/{sha[:16]}.png)\n\n" in text
    assert "*📎 data.csv (text/csv, 8 bytes)*" in text
    assert (tmp_path / "chat_files" / f"{sha[:16]}.png").read_bytes() == image

    nb_path = export_session("shown", events, tmp_path / "chat.ipynb", metadata, load_blob=load)
    notebook = nbformat.read(nb_path, as_version=4)
    nbformat.validate(notebook)
    prompt_cell = notebook.cells[1]
    assert prompt_cell.source == (
        "**You:**\n\nwhat is it?\n\n![Out\\[3\\].png](attachment:1-Out_3_.png)\n\n"
        "*📎 data.csv (text/csv, 8 bytes)*"
    )
    assert base64.b64decode(prompt_cell.attachments["1-Out_3_.png"]["image/png"]) == image

    # without the loader (or once deleted) an image is named, not lost silently
    plain = export_session("shown", events, tmp_path / "plain.md", metadata).read_text()
    assert f"*📎 Out[3].png (image/png, {len(image)} bytes)*" in plain
    client.delete_session("shown")
    assert load(sha) is None
    with pytest.raises(InvalidArgumentError, match="64 hex digits"):
        load("abc")


# -- the panel: Attach (FileUpload) and thumbnails ------------------------------------------


def test_the_panel_attaches_uploads_to_the_next_prompt_and_shows_thumbnails(tmp_path):
    from helpers import wait_until

    from copilot_jupyter.panel import SessionPanel
    from copilot_jupyter.transcript import THUMB_MAX_BYTES

    image = png(seed=51)
    sha = hashlib.sha256(image).hexdigest()
    client = CopilotClient(tmp_path / "store", default_model="echo", max_attachment_bytes=2**20)
    panel = SessionPanel(client=client, poll_interval=0.1)
    try:
        c = panel.controller
        panel.name.value = "shown"
        panel.new_button.click()
        upload = {
            "name": "plot.png",
            "type": "image/png",
            "size": len(image),
            "last_modified": datetime.now(UTC),
        }
        panel.upload.value = ({**upload, "content": memoryview(image)},)
        assert panel.upload.value == ()  # emptied: the same file can be chosen again
        assert [a["displayName"] for a in c.attachments] == ["plot.png"]
        assert "📎 attached for the next prompt: plot.png" in c.status
        # a file over the cap is refused in the status line, and nothing is attached
        big = b"a" * (2**20 + 1)
        panel.upload.value = ({**upload, "name": "big.txt", "content": memoryview(big)},)
        assert c.status_level == "error" and "big.txt" in c.status and "over the cap" in c.status
        assert "CopilotClient(" not in c.status  # the panel has no cap to raise: not said
        assert [a["displayName"] for a in c.attachments] == ["plot.png"]
        panel.prompt.value = "what is it?"
        panel.send_button.click()
        wait_until(lambda: not c.busy and "echo: what is it?" in panel.chat.value, 10, "the reply")
        assert c.attachments == []
        uri = "data:image/png;base64," + base64.b64encode(image).decode()
        assert f'<img class="cj-thumb" src="{uri}" alt="plot.png" title="plot.png">' in (
            panel.chat.value
        )
        user = next(e for e in client.get_messages("shown") if e.type == EventType.USER_MESSAGE)
        assert user.data["attachments"][0]["sha256"] == sha
    finally:
        panel.close()
        client.stop(timeout=5)
    assert THUMB_MAX_BYTES == 2**20


def test_a_large_image_is_a_chip_not_a_thumbnail():
    from copilot.history import Exchange
    from copilot_jupyter.transcript import THUMB_MAX_BYTES, render_entry

    reference = {
        "type": "image",
        "sha256": "0" * 64,
        "mimeType": "image/png",
        "displayName": "huge.png",
        "size": THUMB_MAX_BYTES + 1,
    }
    asked: list[str] = []
    exchange = Exchange(message_id="m", prompt="see", attachments=[reference])
    html = render_entry(exchange, lambda sha: asked.append(sha) or b"x")
    assert '<span class="cj-chip">📎 huge.png · 1,048,577 bytes</span>' in html
    assert asked == []  # never read: a thumbnail would resend megabytes to the browser


def test_a_queued_turn_aborted_before_it_starts_keeps_its_attachment_with_the_prompt(
    slow_client, home
):
    image = png(seed=61)
    sha = hashlib.sha256(image).hexdigest()
    session = slow_client.create_session("q", model="echo")
    first = session.send("a long one " * 20)
    queued = session.send("later", attachments=[blob(image)])
    assert session.abort(queued)
    session.wait(first, timeout=30)
    user = [e for e in slow_client.get_messages("q") if e.type == EventType.USER_MESSAGE][-1]
    assert user.data["attachments"][0]["sha256"] == sha
    assert slow_client.get_attachment(sha) == image  # no reference without its bytes
    slow_client.delete_session("q")
    assert slow_client.get_attachment(sha) is None


# -- PostgreSQL: a delete and a put of the same content racing --------------------------------


def _waiting_on_a_lock(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return conn.execute(query).fetchone()[0] > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("first", ["put", "delete"])
def test_postgres_a_racing_put_keeps_the_bytes_whichever_locks_first(postgres_server, first):
    """Session a holds the only reference; session b attaches the same bytes while a is
    deleted. Whichever transaction takes the blob's row lock first, the other waits for it
    (seen in pg_stat_activity), and b's reference ends with its bytes stored."""
    import threading

    from helpers import wait_until

    from copilot.events import Event
    from copilot.store_postgres import PostgresStore

    url = postgres_server.new_database()
    image = png(seed=71)
    sha = hashlib.sha256(image).hexdigest()
    one, two = PostgresStore(url, owner="o"), PostgresStore(url, owner="o")
    try:
        for name in ("a", "b"):
            one.create_session({"sessionId": name, "modifiedTime": "2026-01-01T00:00:00+00:00"})
            one.append(name, [Event(EventType.SESSION_START, {"model": "echo"})])
        one.put_blobs("a", [(sha, "image/png", image)])
        errors: list[BaseException] = []

        def other() -> None:
            try:
                if first == "put":
                    two.delete_session("a")
                else:
                    two.put_blobs("b", [(sha, "image/png", image)])
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        with one.transaction():
            if first == "put":
                one.put_blobs("b", [(sha, "image/png", image)])
            else:
                one.delete_session("a")
            thread = threading.Thread(target=other)
            thread.start()
            wait_until(lambda: _waiting_on_a_lock(url), 30, "the other transaction to wait")
        thread.join(30)
        assert not errors, errors
        assert one.blob_refs(sha) == ["b"]
        assert one.get_blob(sha) == image
        one.delete_session("b")
        assert one.get_blob(sha) is None and one.blob_refs(sha) == []
    finally:
        one.close()
        two.close()


def test_out_n_falls_back_to_a_results_png_a_figure_or_repr_png():
    from matplotlib.figure import Figure

    from copilot_jupyter.figures import FigureLog, attachment_for

    figure = Figure(figsize=(1, 1))
    figure.add_subplot().plot([1, 2, 3])

    class Picture:
        def _repr_png_(self) -> bytes:
            return png(seed=81)

    from_figure = attachment_for("Out[5]", FigureLog(), {5: figure})
    data = base64.b64decode(from_figure["data"])
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and from_figure["displayName"] == "Out[5].png"
    assert resolve_attachments([from_figure])[0].mime_type == "image/png"
    from_repr = attachment_for("Out[6]", FigureLog(), {6: Picture()})
    assert base64.b64decode(from_repr["data"]) == png(seed=81)


def test_refusals_name_the_fix_in_the_terms_of_each_surface():
    """An image for a blind model, a file over the cap: the API, the magics, the panel and the
    command line each say how to fix it in their own terms."""
    from copilot.__main__ import explain as cli_explain
    from copilot.errors import AttachmentTooLargeError, VisionNotSupportedError
    from copilot_jupyter.controller import plain_error
    from copilot_jupyter.magics import explain as magic_explain

    blind = VisionNotSupportedError(model="local:smollm2", images=("fig.png",), seeing=("echo",))
    assert str(blind) == (
        "local:smollm2 cannot read images, and 'fig.png' is an image; nothing was sent. Use a "
        "model that can see (echo): session.set_model(...), or attach text instead"
    )
    surfaces = {
        "magics": (magic_explain(blind), "%copilot model NAME MODEL switches a session's model"),
        "panel": (plain_error(blind), "pick it in the model list"),
        "cli": (cli_explain(blind), "send it again with -m MODEL"),
    }
    for surface, (text, fix) in surfaces.items():
        assert fix in text and "set_model" not in text, surface
        assert "'fig.png' is an image" in text and "(echo)" in text, surface
    two = VisionNotSupportedError(model="m", images=("a.png", "b.png"), seeing=())
    assert "'a.png', 'b.png' are images" in str(two) and "none is usable now" in str(two)
    big = AttachmentTooLargeError("api words", size=2_000, limit=1_000, name="big.txt")
    for text in (magic_explain(big), plain_error(big), cli_explain(big)):
        assert "'big.txt' is 2,000 bytes, over the cap of 1,000 bytes" in text
        assert "CopilotClient" not in text and "Attach a smaller file" in text
