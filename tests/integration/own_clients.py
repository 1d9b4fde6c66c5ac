"""This process's connections in a Redis's CLIENT LIST.

The tests share one Redis with other test runs on the machine; counting or killing every
connection with a given client name would count or kill theirs too.
"""

from __future__ import annotations

import os

import redis


def my_ports() -> set[int]:
    """Local TCP ports of this process's sockets: other test runs share the Redis and its CLIENT LIST."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def own_clients(client: redis.Redis, name: str) -> list[str]:
    """Addresses of this process's connections named `name` (CLIENT SETNAME)."""
    mine = my_ports()
    return [
        c["addr"]
        for c in client.client_list()
        if c["name"] == name and int(c["addr"].rsplit(":", 1)[1]) in mine
    ]
