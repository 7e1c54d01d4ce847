"""An MLflow run's life: started with liveness tags, ended KILLED on a signal, found and
marked when its process died, and checked before a finished run is read back.

* :func:`tracked_run` wraps :func:`recmind_dist.tracking.mlflow_run` (or re-opens a run for
  ``train --resume``): it tags ``recmind.pid``/``recmind.host``/``recmind.pid_start`` and a
  ``recmind.heartbeat`` (:func:`heartbeat`, once an epoch), and turns SIGINT/SIGTERM into
  :class:`Interrupted`, ending the run as ``KILLED`` with ``recmind.end_reason``.
* :func:`reap_dead_runs` marks RUNNING runs whose process is gone (SIGKILL, OOM, power
  loss) as ``KILLED``: on this host when the pid is dead or belongs to a newer process, on
  any host when the heartbeat is older than :data:`STALE_AFTER_S`. Every command that
  starts or reads runs calls it first.
* :func:`require_finished` refuses a run that is not ``FINISHED`` with a clear message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from recmind_dist import tracking
from recmind_dist.errors import InputError
from recmind_dist.io import pid_alive
from recmind_dist.specs import JobSpec

log = logging.getLogger(__name__)

TAG_PID, TAG_HOST, TAG_PID_START = "recmind.pid", "recmind.host", "recmind.pid_start"
TAG_HEARTBEAT, TAG_END_REASON = "recmind.heartbeat", "recmind.end_reason"
#: A RUNNING run whose heartbeat is older than this is dead, whatever host it ran on.
STALE_AFTER_S = 24 * 3600.0
#: Exit statuses of a command ended by a signal (128 + signal number, as a shell reports).
EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143}


class Interrupted(BaseException):
    """The job was stopped by ``signal_name``; ``run_id`` is the run marked KILLED."""

    def __init__(self, signal_name: str, run_id: str | None = None) -> None:
        super().__init__(signal_name)
        self.signal_name, self.run_id = signal_name, run_id

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.signal_name, 1)


def _process_start(pid: int) -> str:
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except Exception:  # noqa: BLE001 - psutil missing or the process is gone
        return ""


def liveness_tags() -> dict[str, str]:
    pid = os.getpid()
    return {TAG_PID: str(pid), TAG_HOST: socket.gethostname(), TAG_PID_START: _process_start(pid),
            TAG_HEARTBEAT: f"{time.time():.0f}"}


def heartbeat() -> None:
    """Refresh the active run's heartbeat tag (called once an epoch)."""
    tracking.set_tags({TAG_HEARTBEAT: f"{time.time():.0f}"})


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM raise :class:`Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM arriving inside are held until the block ends (a checkpoint being
    written is never cut in half), then raised as :class:`Interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[str] = []

    def _hold(signum: int, _frame: Any) -> None:
        pending.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, _hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if pending:
        raise Interrupted(pending[0])


def when_unlocked(fn: Callable[[], Any], attempts: int = 8, wait_s: float = 0.5) -> Any:
    """``fn()``, retried while a SQLite tracking store is locked by another writer (a local
    store on a busy machine: another process held the write lock past SQLite's timeout), with
    waits of ``wait_s``, 2·``wait_s``, ... (~14 s in all); any other error, or the lock
    still held at the last attempt, is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or "database is locked" not in str(exc):
                raise
            log.info("tracking store locked; retrying in %.1f s", wait_s * attempt)
            time.sleep(wait_s * attempt)
    return None


def _end_killed(run_id: str, reason: str) -> None:
    mlflow = tracking._mlflow()
    with contextlib.suppress(Exception):
        when_unlocked(lambda: mlflow.set_tag(TAG_END_REASON, reason))
    when_unlocked(lambda: mlflow.end_run("KILLED"))
    log.warning("MLflow run %s marked KILLED: %s", run_id, reason)


@contextlib.contextmanager
def tracked_run(spec: JobSpec, tags: dict[str, str], resume_run: str | None = None
                ) -> Iterator[Any]:
    """A new MLflow run for ``spec`` (or the run ``resume_run`` re-opened) with liveness tags;
    SIGINT/SIGTERM end it KILLED with a reason tag and raise :class:`Interrupted`."""
    reap_dead_runs(tracking.tracking_uri(spec.tracking))
    with signals_interrupt():
        if resume_run is None:
            ctx = tracking.mlflow_run(spec, {**tags, **liveness_tags()})
        else:
            ctx = _reopened(spec, resume_run)
        with ctx as run:
            run_id = run.info.run_id
            try:
                yield run
            except (Interrupted, KeyboardInterrupt) as exc:
                name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
                with signals_ignored():
                    _end_killed(run_id, f"interrupted by {name}")
                raise Interrupted(name, run_id) from None
            except Exception as exc:  # the run ends FAILED: say why on the run
                with contextlib.suppress(Exception):
                    tracking.set_tags({TAG_END_REASON: f"{type(exc).__name__}: {exc}"[:500]})
                raise


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let a second Ctrl-C not break the bookkeeping of the first (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _reopened(spec: JobSpec, run_id: str) -> Iterator[Any]:
    mlflow = tracking._mlflow()
    mlflow.set_tracking_uri(tracking.tracking_uri(spec.tracking))
    mlflow.set_experiment(experiment_id=mlflow.get_run(run_id).info.experiment_id)
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.set_tags({**liveness_tags(), TAG_END_REASON: "", "recmind.resumed": "true"})
        yield run


def _dead_reason(tags: dict[str, str], now: float) -> str | None:
    """Why a RUNNING run with these tags has no live process, or None when it may be alive."""
    pid, host = tags.get(TAG_PID), tags.get(TAG_HOST)
    beat = float(tags.get(TAG_HEARTBEAT) or 0)
    if pid and host == socket.gethostname():
        if not pid_alive(int(pid)):
            return f"process {pid} on {host} died without ending the run (SIGKILL, OOM, crash)"
        started = tags.get(TAG_PID_START)
        if started and _process_start(int(pid)) not in ("", started):
            return f"process {pid} on {host} died (the pid now belongs to another process)"
        return None
    if beat and now - beat > STALE_AFTER_S:
        return f"no heartbeat for {(now - beat) / 3600:.1f} h (process on {host} presumed dead)"
    return None


def reap_dead_runs(uri: str, experiment_ids: list[str] | None = None) -> list[str]:
    """Mark RUNNING runs whose process is gone as KILLED with a reason tag; return their ids."""
    mlflow = tracking._mlflow()
    client = mlflow.MlflowClient(uri)
    try:
        ids = experiment_ids or [e.experiment_id for e in client.search_experiments()]
        if not ids:
            return []
        runs = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000)
    except Exception as exc:  # noqa: BLE001 - an unreachable store is reported by the caller
        log.debug("cannot look for dead runs in %s: %s", uri, exc)
        return []
    now, reaped = time.time(), []
    for r in runs:
        reason = _dead_reason(r.data.tags, now)
        if reason is None:
            continue
        client.set_tag(r.info.run_id, TAG_END_REASON, reason)
        client.set_terminated(r.info.run_id, "KILLED")
        log.warning("MLflow run %s was left RUNNING by a dead process; marked KILLED (%s)",
                    r.info.run_id, reason)
        reaped.append(r.info.run_id)
    return reaped


def run_status(run_id: str, uri: str) -> tuple[str, dict[str, str]]:
    """(status, tags) of ``run_id`` after reaping dead runs; an unknown id is an InputError."""
    mlflow = tracking._mlflow()
    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - mlflow raises several types for unknown runs
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise InputError("--run", "run_id", f"no such MLflow run {run_id!r} in {uri} ({first})"
                         ) from None
    if run.info.status == "RUNNING":
        reap_dead_runs(uri, [run.info.experiment_id])
        run = client.get_run(run_id)
    return run.info.status, dict(run.data.tags)


def require_finished(run_id: str, uri: str) -> dict[str, str]:
    """The tags of ``run_id``; refuse a run that is not FINISHED (running, killed, failed)."""
    status, tags = run_status(run_id, uri)
    if status == "RUNNING":
        raise InputError("--run", "run_id", f"run {run_id} is still RUNNING (process "
                         f"{tags.get(TAG_PID, '?')} on {tags.get(TAG_HOST, '?')}); wait for it")
    if status != "FINISHED":
        why = tags.get(TAG_END_REASON) or "no reason recorded"
        raise InputError("--run", "run_id", f"run {run_id} did not finish (status {status}: "
                         f"{why}); continue it with: recmind-dist train --resume {run_id}")
    return tags
