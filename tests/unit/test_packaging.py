import subprocess
import sys


def test_storefront_side_imports_without_the_worker_side():
    code = (
        "import sys, producers\n"
        "from producers import Publisher, AsyncPublisher, RankingReader, AsyncRankingReader, Settings\n"
        "Publisher(Settings()); RankingReader(Settings())\n"
        "worker_side = ('celery', 'httpx', 'aiohttp', 'prometheus_client', 'worker')\n"
        "bad = sorted(m for m in worker_side if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""


# A clean install has only what our metadata asks for. The check below imports
# everything the running code imports with every other installed distribution
# hidden (a finder that refuses their modules), so an undeclared dependency fails
# here as it would on a fresh machine, while optional imports (httpx's CLI tries
# pygments) fall back as they would there. Found by it: kombu 5.7 moved
# `packaging`, imported by its Redis transport, behind its `redis` extra.
_IMPORT_EVERYTHING = """
import importlib, json, sys
hidden = set(json.loads(sys.argv[1]))

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"{name} is not a declared dependency", name=name)
        return None

sys.meta_path.insert(0, Hide())
for name in ("producers", "producers.publisher", "producers.reader", "producers.broker",
             "kombu.transport.redis", "kombu.transport.pyamqp",
             "worker.app", "worker.pump", "worker.cli", "worker.brokers.redis",
             "worker.brokers.kombu_consumer", "worker.delivery", "worker.metrics",
             "sandbox.server", "sandbox.runner"):
    importlib.import_module(name)
"""


def _declared_closure(extras: set[str]) -> set[str]:
    """Normalised names of the distributions our metadata pulls in with `extras`."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [("fashionai-pipeline", frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in (wanted or {""})
            ):
                continue
            key = canonicalize_name(req.name)
            if key == "fashionai-pipeline":
                todo.append((key, frozenset(req.extras)))
            elif key not in seen:
                seen.add(key)
                todo.append((key, frozenset(req.extras)))
    return seen


def test_the_running_code_needs_only_declared_distributions():
    import json
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    declared = _declared_closure({"worker", "sandbox"})
    hidden = sorted(
        module
        for module, dists in packages_distributions().items()
        if module not in {"producers", "worker", "sandbox"}
        and not any(canonicalize_name(d) in declared for d in dists)
    )
    assert "pytest" in hidden  # the dev tools are installed here, and hidden
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING, json.dumps(hidden)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
