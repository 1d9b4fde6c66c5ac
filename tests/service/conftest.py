"""The HTTP service as users run it: `fashionai-pipeline serve` on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx
import pytest

from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.local import free_port, settings_env

INGEST = "ingest-key-0123456789abcdef"
READ = "read-key-publishable-0123456789"
SIGNING = "signing-secret-0123456789abcdef"
ORIGIN = "https://shop.example"


@dataclass
class Service:
    url: str
    popen: subprocess.Popen[bytes]
    log_path: str

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        **settings_env(settings),
        "FASHIONAI_INGEST_KEYS": INGEST,
        "FASHIONAI_READ_KEYS": READ,
        "FASHIONAI_SHOPPER_SIGNING_KEY": SIGNING,
        "FASHIONAI_CORS_ORIGINS": f"{ORIGIN}, https://other.example",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def launch(env: Mapping[str, str], log_dir: str) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    log_path = os.path.join(log_dir, f"serve-{port}.log")
    argv = [
        sys.executable,
        "-m",
        "fashionai_pipeline.worker.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=dict(env))
    return popen, f"http://127.0.0.1:{port}", log_path


@pytest.fixture
def start_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []
    log_dir = str(tmp_path_factory.mktemp("serve"))

    def start(settings: Settings, **extra: str) -> Service:
        popen, url, log_path = launch(service_env(settings, **extra), log_dir)
        service = Service(url, popen, log_path)
        started.append(service)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return service
            except httpx.HTTPError:
                pass
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start:\n{service.output()[-3000:]}")
            time.sleep(0.1)

    yield start
    for service in started:
        service.stop()
