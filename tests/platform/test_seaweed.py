"""SeaweedFS as the S3 server: a real ``weed server -s3`` on 127.0.0.1 with generated credentials."""

from __future__ import annotations

import json
import os
import stat

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from loopml.platform.seaweed import SeaweedS3
from loopml.procs import pid_alive


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed") / "s3", bucket="bkt").start()
    try:
        yield server
    finally:
        server.stop()


def _listening_addresses(pid: int) -> set[str]:
    """Local addresses of the TCP sockets ``pid`` listens on (from /proc/net/tcp{,6})."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addrs = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                addrs.add(f[1].split(":")[0])
    return addrs


def test_bucket_exists_and_objects_round_trip(seaweed):
    s3 = seaweed.client()
    s3.put_object(Bucket="bkt", Key="x/y.bin", Body=b"\x00payload")
    assert s3.get_object(Bucket="bkt", Key="x/y.bin")["Body"].read() == b"\x00payload"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix="x/")["Contents"]] == ["x/y.bin"]
    assert seaweed.healthy()


def test_wrong_credentials_are_refused(seaweed):
    bad = boto3.client("s3", endpoint_url=seaweed.endpoint, aws_access_key_id="loopml",
                       aws_secret_access_key="not-the-secret", region_name="us-east-1",
                       config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as exc:
        bad.list_objects_v2(Bucket="bkt")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_only_loopback_and_the_secret_only_in_a_private_file(seaweed):
    # 0100007F is 127.0.0.1 in /proc/net/tcp's little-endian hex
    assert _listening_addresses(seaweed.pid) == {"0100007F"}
    secret = seaweed.secret_key()
    assert secret not in open(f"/proc/{seaweed.pid}/cmdline", "rb").read().decode(errors="replace")
    identities = json.loads(seaweed.config_file.read_text())["identities"]
    assert identities[0]["credentials"][0]["secretKey"] == secret
    for f in (seaweed.config_file, seaweed.secret_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_stop_ends_the_server_and_removes_its_sockets(tmp_path):
    import glob

    server = SeaweedS3(tmp_path / "s3")
    try:
        server.start()
        ours = [s for p in server.ports.values() for s in glob.glob(f"/tmp/seaweedfs-*-grpc-{p}.sock")]
        assert ours  # weed's fixed-path gRPC sockets exist while it runs
    finally:
        server.stop()
    assert not pid_alive(server.pid) and not server.healthy()
    assert not [s for s in ours if os.path.exists(s)]


def test_an_invalid_bucket_name_fails_at_once_and_leaves_no_server(tmp_path):
    from loopml.errors import PlatformComponentFailed

    server = SeaweedS3(tmp_path / "s3", bucket="b1")  # S3 bucket names have 3 to 63 characters
    with pytest.raises(PlatformComponentFailed, match="bucket name 'b1'"):
        server.start(timeout=120)
    assert server.pid and not pid_alive(server.pid)  # start stopped what it had started
