import pathlib
import subprocess
import sys
import zipfile

import pytest


def test_storefront_side_imports_without_the_worker_side():
    code = (
        "import sys, fashionai_pipeline.producers\n"
        "from fashionai_pipeline.producers import Publisher, AsyncPublisher, Settings\n"
        "from fashionai_pipeline.producers import RankingReader, AsyncRankingReader\n"
        "Publisher(Settings()); RankingReader(Settings())\n"
        "worker_side = ('celery', 'httpx', 'aiohttp', 'prometheus_client', 'fashionai_pipeline.worker')\n"
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
for name in sys.argv[2:]:
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

    declared = _declared_closure({"worker", "sandbox", "serve"})
    hidden = sorted(
        module
        for module, dists in packages_distributions().items()
        if module != "fashionai_pipeline" and not any(canonicalize_name(d) in declared for d in dists)
    )
    assert "pytest" in hidden  # the dev tools are installed here, and hidden
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING, json.dumps(hidden), *_runtime_modules()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]


ROOT = pathlib.Path(__file__).resolve().parents[2]
PARTS = ("producers", "worker", "sandbox")


def project_modules() -> list[str]:
    """Every module of the project under its one import name, from the folders themselves."""
    names = ["fashionai_pipeline"]
    for part in PARTS:
        for path in sorted((ROOT / part).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            dotted = ".".join(rel.parts).removesuffix(".__init__")
            names.append(f"fashionai_pipeline.{dotted}")
    return names


# Each web framework integration needs its framework's extra, and only that one:
# checked module by module below, not with the worker's and sandbox's extras.
INTEGRATIONS = {
    "fashionai_pipeline.producers.integrations.django": "django",
    "fashionai_pipeline.producers.integrations.flask": "flask",
    "fashionai_pipeline.producers.integrations.fastapi": "fastapi",
}


@pytest.mark.parametrize(("module", "extra"), sorted(INTEGRATIONS.items()))
def test_each_framework_integration_needs_only_its_extra(module, extra):
    import json
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    declared = _declared_closure({extra})
    hidden = sorted(
        name
        for name, dists in packages_distributions().items()
        if name != "fashionai_pipeline" and not any(canonicalize_name(d) in declared for d in dists)
    )
    assert "celery" in hidden  # the worker's extra is not needed by a web app
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERYTHING, json.dumps(hidden), module],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def _runtime_modules() -> list[str]:
    # __main__ modules run a program when imported; kombu loads its transports lazily.
    kept = [m for m in project_modules() if not m.endswith("__main__") and m not in INTEGRATIONS]
    return [*kept, "kombu.transport.redis", "kombu.transport.pyamqp"]


def test_bare_folder_names_refuse_to_import_from_the_checkout():
    # From the repository root the folders are importable under their bare names;
    # each refuses, so no module is loaded under two names.
    for part in PARTS:
        out = subprocess.run(
            [sys.executable, "-c", f"import {part}"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert out.returncode != 0
        assert f"import fashionai_pipeline.{part}, not {part}" in out.stderr


def test_the_wheel_installs_one_namespace_beside_a_projects_own_worker_and_producers(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("fashionai_pipeline-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        files = {n for n in zf.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert {n.split("/")[0] for n in files} == {"fashionai_pipeline"}
    expected = {
        f"fashionai_pipeline/{p.relative_to(ROOT)}" for part in PARTS for p in (ROOT / part).rglob("*.py")
    }
    assert expected <= files, sorted(expected - files)

    # A fresh venv holding only the wheel; the dependencies come from this venv's
    # site-packages through a path entry (not a site dir, so this venv's editable
    # install of the project is not seen there).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site_dir = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site_dir)
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    pathlib.Path(site_dir, "deps.pth").write_text(deps + "\n")

    project = tmp_path / "shop"
    (project / "producers").mkdir(parents=True)
    (project / "worker.py").write_text("WHO = 'the shop worker'\n")
    (project / "producers" / "__init__.py").write_text("WHO = 'the shop producers'\n")
    code = (
        "import worker, producers, fashionai_pipeline.producers as fp, fashionai_pipeline.worker.app\n"
        "import fashionai_pipeline.sandbox\n"
        "print(worker.WHO); print(producers.WHO); print(fp.__file__); print(fp.Publisher.__name__)\n"
    )
    out = subprocess.run([py, "-c", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    shop_worker, shop_producers, ours, publisher = out.stdout.split("\n")[:4]
    assert (shop_worker, shop_producers, publisher) == ("the shop worker", "the shop producers", "Publisher")
    assert ours.startswith(site_dir)
