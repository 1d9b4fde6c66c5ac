"""Starting an example shop under its real server, and reading what it rendered."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.local import free_port, settings_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SECRET = "example-shop-test-secret-" + "0" * 16


@dataclass
class Shop:
    framework: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _argv(framework: str, port: int) -> tuple[list[str], Path]:
    bind = f"127.0.0.1:{port}"
    if framework == "django":
        app, folder = "shop.wsgi:application", EXAMPLES / "django"
    elif framework == "flask":
        app, folder = "app:app", EXAMPLES / "flask"
    else:
        argv = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
        return [*argv, "--no-access-log"], EXAMPLES / "fastapi"
    # --preload: the app (and its Publisher and RankingReader) is built in the master
    # and the three workers fork from it, the case fork-safety is for.
    return [sys.executable, "-m", "gunicorn", "--preload", "-w", "3", "-b", bind, app], folder


@contextmanager
def running_shop(
    framework: str, settings: Settings, log_dir: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[Shop]:
    """The example shop of `framework` on a free loopback port, stopped (TERM, then KILL) at the end."""
    port = free_port()
    argv, folder = _argv(framework, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHIONAI_")}
    env.update(settings_env(settings))
    env.update({"SHOP_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1", **(extra_env or {})})
    log = log_dir / f"{framework}-{port}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    shop = Shop(framework, f"http://127.0.0.1:{port}", popen, log)
    try:
        _wait_ready(shop)
        yield shop
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)  # its own session: the server and its workers
                popen.wait(10)


def _wait_ready(shop: Shop, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shop.popen.poll() is not None:
            break
        try:
            if httpx.get(shop.url + "/", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{shop.framework} shop did not come up; its output:\n{shop.output()[-3000:]}")


_PRODUCT = re.compile(r'<li class="product" data-id="([^"]+)"')


def rendered(html: str) -> list[str]:
    """The product ids a page rendered, in order."""
    return _PRODUCT.findall(html)


def login(client: httpx.Client, framework: str, username: str, password: str) -> None:
    """Sign in through the shop's own form (Django's with its CSRF token)."""
    form = {"username": username, "password": password}
    if framework == "django":
        page = client.get("/login")
        page.raise_for_status()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None, page.text
        form["csrfmiddlewaretoken"] = token.group(1)
    answer = client.post("/login", data=form)
    assert answer.status_code in (302, 303), (answer.status_code, answer.text[:500])


def load_storefront():
    """The example shops' shared data module (examples/storefront), loaded from its file
    so the test process's sys.path stays as it is."""
    import importlib.util
    import sys

    if "storefront" in sys.modules:
        return sys.modules["storefront"]
    spec = importlib.util.spec_from_file_location("storefront", EXAMPLES / "storefront" / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["storefront"] = module
    spec.loader.exec_module(module)
    return module
