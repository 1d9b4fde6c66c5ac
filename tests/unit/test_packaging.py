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
