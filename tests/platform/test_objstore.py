"""Write-then-publish on a real S3 server (SeaweedFS through s3fs) and on a local folder."""

from __future__ import annotations

import threading

import pytest

from loopml.errors import ObjectNotPublished
from loopml.platform.objstore import ObjectHome
from loopml.platform.seaweed import SeaweedS3


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("objstore") / "s3", bucket="home").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["s3", "local"])
def home(request, tmp_path, monkeypatch) -> ObjectHome:
    if request.param == "local":
        return ObjectHome(str(tmp_path / "home"))
    server = request.getfixturevalue("s3_server")
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key())
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return ObjectHome(f"s3://home/{tmp_path.name}")  # a prefix per test


def test_publish_then_read_back(home, request):
    assert not home.published("snapshots/abc")
    with pytest.raises(ObjectNotPublished, match="not published"):
        home.read("snapshots/abc")
    home.publish("snapshots/abc", {"data.parquet": b"\x00" * 10_000, "profile.json": b"{}"})
    assert home.read("snapshots/abc") == {"data.parquet": b"\x00" * 10_000, "profile.json": b"{}"}
    assert home.read("snapshots/abc", "profile.json") == b"{}"
    assert home.names("snapshots") == ["snapshots/abc"]
    if home.url.startswith("s3://"):  # the objects are on the server, listed through its S3 API
        prefix = home.url.split("/", 3)[3]
        keys = {o["Key"] for o in request.getfixturevalue("s3_server").client()
                .list_objects_v2(Bucket="home", Prefix=prefix)["Contents"]}
        assert f"{prefix}/snapshots/abc/MANIFEST.json" in keys and len(keys) == 3


def test_a_crash_before_the_manifest_leaves_the_previous_publication(home, monkeypatch):
    home.publish("profiles/m", {"a": b"old-a", "b": b"old-b"})
    real_put = home._put
    calls = []

    def crash_on_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("writer killed")
        real_put(path, data)

    monkeypatch.setattr(home, "_put", crash_on_second)
    with pytest.raises(OSError, match="writer killed"):
        home.publish("profiles/m", {"a": b"new-a", "b": b"new-b"})
    monkeypatch.setattr(home, "_put", real_put)
    assert home.read("profiles/m") == {"a": b"old-a", "b": b"old-b"}  # not a mix, not partial
    assert len(home.collect("profiles/m")) == 1  # the orphaned version folder
    assert home.read("profiles/m") == {"a": b"old-a", "b": b"old-b"}
    assert home.names("profiles") == ["profiles/m"]


def test_a_reader_racing_a_writer_never_sees_a_mix(home):
    home.publish("race", {"a": b"0" * 4096, "b": b"0" * 4096})
    stop = threading.Event()
    seen, errors = set(), []

    def reader():
        while not stop.is_set():
            try:
                files = home.read("race")
            except ObjectNotPublished as exc:  # superseded version removed under us is not expected
                errors.append(str(exc))
                return
            a, b = files["a"], files["b"]
            if a != b or len(set(a)) != 1:
                errors.append(f"mixed publication: {a[:1]!r} vs {b[:1]!r}")
                return
            seen.add(a[:1])

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 10):
            body = str(i).encode() * 4096
            home.publish("race", {"a": body, "b": body})
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors, errors
    assert home.read("race")["a"] == b"9" * 4096
    assert seen  # the reader did read


def test_a_corrupted_object_is_refused(home):
    home.publish("x", {"f": b"payload"})
    version = home.manifest("x")["version"]
    home.fs.pipe_file(home._path("x", version, "f"), b"payloaX")
    with pytest.raises(ObjectNotPublished, match="does not match"):
        home.read("x")


@pytest.mark.parametrize("bad", ["", "../x", "a//b", "v-1", "a/MANIFEST.json"])
def test_unsafe_names_are_refused(bad, tmp_path):
    with pytest.raises(ValueError, match="object name"):
        ObjectHome(str(tmp_path)).publish(bad, {"f": b""})
