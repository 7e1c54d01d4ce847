"""Start or connect to Ray, keeping a local cluster on loopback only.

``ray.init(_node_ip_address='127.0.0.1')`` alone is not enough: Ray rewrites the address to the
host interface unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is in the environment when the
node starts (see /work/shared/STACK-NOTES.md). :func:`ensure_ray` sets it for local starts.

The private local Ray has no dashboard, hence no State API. Ray Train V2's
``PlacementGroupCleaner`` actor polls that API and logs "Failed to query Ray Train Controller
actor state" every few seconds into the user's output; it guards against a controller dying
on a shared cluster, which a private Ray (shut down with its driver) does not need. Every
worker process of a private Ray runs :func:`quiet_private_ray_workers` first (Ray's
``worker_process_setup_hook``), which raises that logger to ERROR.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ensure_ray", "shutdown_ray"]

_STARTED_HERE = False
#: the logger of Ray Train V2's placement-group cleaner (its State API warnings)
PG_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def quiet_private_ray_workers() -> None:
    """``worker_process_setup_hook`` of the private local Ray (see the module docstring)."""
    logging.getLogger(PG_CLEANER_LOGGER).setLevel(logging.ERROR)


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               num_gpus: int | None = None, **init_kwargs: Any) -> dict[str, Any]:
    """Make sure this process is connected to Ray; idempotent.

    * already connected -> nothing happens;
    * ``address`` (or ``RAY_ADDRESS``) given -> connect to that cluster (``"auto"`` = the
      local ``ray start`` cluster); this is the path under ``ray job submit``;
    * otherwise start a private local Ray bound to 127.0.0.1, without dashboard, with
      ``num_cpus`` CPUs (None = all cores).

    Returns ``ray.cluster_resources()``.
    """
    import ray

    global _STARTED_HERE
    if ray.is_initialized():
        return ray.cluster_resources()
    addr = address or os.environ.get("RAY_ADDRESS") or None
    common = {"ignore_reinit_error": True, "log_to_driver": True, "logging_level": logging.WARNING}
    common.update(init_kwargs)
    if addr:
        log.info("connecting to Ray at %s", addr)
        ray.init(address=addr, **common)
    else:
        # Children (raylet, agents, workers) read the variable at import; this process already
        # imported ray, so its cached constant is switched too.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        log.info("starting local Ray on 127.0.0.1 (num_cpus=%s)", num_cpus)
        runtime_env = dict(common.pop("runtime_env", None) or {})
        runtime_env.setdefault("worker_process_setup_hook",
                               f"{__name__}.{quiet_private_ray_workers.__name__}")
        common["runtime_env"] = runtime_env
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus,
                 _node_ip_address="127.0.0.1", include_dashboard=False, **common)
        _STARTED_HERE = True
    return ray.cluster_resources()


def shutdown_ray(force: bool = False) -> None:
    """Shut Ray down if this module started it (or always, with ``force``)."""
    import ray

    global _STARTED_HERE
    if ray.is_initialized() and (_STARTED_HERE or force):
        ray.shutdown()
    _STARTED_HERE = False
