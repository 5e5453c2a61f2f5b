"""Reaching a Ray cluster: which address (WORKBENCH_RAY_ADDRESS), the runtime env that carries the
`core` package to it, and whether a job asks Ray for a GPU. Ray itself is not imported here."""
from __future__ import annotations

import os
import re
import socket

from core.base import paths
from core.run.execute import requested_device

ADDRESS_ENV = "WORKBENCH_RAY_ADDRESS"
NAMESPACE = "workbench"
CONNECT_TIMEOUT_S = 5.0    # a cluster address that does not answer a TCP connect in this time is an error
_ADDRESS = re.compile(r"^(ray://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def check_address(address: str | None) -> str | None:
    """The cluster address to connect to (None: start a local Ray), or a ValueError that says
    which forms are understood. A host:port that refuses connections is refused here, at once,
    rather than after Ray's own minute-long retries."""
    address = (address or "").strip()
    if not address or address == "local":
        return None
    if address == "auto":
        return address
    m = _ADDRESS.match(address)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise ValueError(f"{ADDRESS_ENV}={address!r} is not a Ray address: use `auto` (a cluster started on this "
                         "machine with `ray start --head`), `ray://HOST:PORT` (Ray Client, port 10001 by default), "
                         "`HOST:PORT` (the head's GCS, port 6379 by default), or leave it unset for a local Ray")
    host = m["host"].strip("[]")
    try:
        with socket.create_connection((host, int(m["port"])), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address} ({ADDRESS_ENV}): {e.strerror or e}. "
                              "Start one with `ray start --head` on that machine, or fix the address") from None
    return address


def wants_gpu(config: dict, cluster_gpus: float) -> bool:
    """Ask Ray for a GPU when the config's device is cuda, or auto on a cluster that has GPUs."""
    device = requested_device(config)
    if device.startswith("cuda"):
        if cluster_gpus <= 0:
            raise ValueError(f"the job asks for {device} but the Ray cluster has no GPU")
        return True
    return device == "auto" and cluster_gpus > 0


def runtime_env() -> dict:
    """The Ray job's runtime env: the `core` package travels with it (Ray uploads it once), so a
    cluster needs nothing installed but the pinned requirements. A process that connects to Ray
    itself passes this to `ray.init` (Ray takes local directories only there)."""
    env: dict = {"py_modules": [str(paths.CORE_DIR)], "excludes": ["__pycache__", "*.pyc"]}
    plugins = os.environ.get("WORKBENCH_TASK_MODULES")
    if plugins:   # task plugins register in every worker too (their modules must be importable there)
        env["env_vars"] = {"WORKBENCH_TASK_MODULES": plugins}
    return env
