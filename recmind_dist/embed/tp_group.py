"""A DeepSpeed tensor-parallel group owned by one encoder replica (e.g. a Ray Data actor).

DeepSpeed AutoTP (:func:`~recmind_dist.embed.encoder.shard_with_deepspeed`) needs every rank
of a process group to run the same forward pass in lock-step. A Ray Data actor is a single
process, so :class:`TPGroup` makes the calling process rank 0 of a private group and starts
ranks 1..N-1 as child processes on the same node.

Start-up (:class:`TPGroup` constructor)

1. rank 0 creates a ``FileStore`` in a fresh temporary directory: the rendezvous needs no
   network port (a ``TCPStore`` server listens on every interface whatever host it is
   given), and there is no free-port race;
2. it starts each helper as ``python -c "...tp_group._helper_main()"`` with one JSON argument
   (store path, rank, world size, device, threads, model, spec, parent pid);
3. every rank loads the full model and sets the store key ``ready/<rank>``. Rank 0 waits for
   all keys while polling its children: a helper that exits while starting raises a
   ``RuntimeError`` with its exit code instead of a hang (its traceback is in the actor's log);
4. all ranks join the default process group through the store -- gloo on CPU, bound to the
   loopback interface (``GLOO_SOCKET_IFNAME=lo`` unless set), nccl with one GPU per rank
   (``cuda:<rank>`` among the replica's visible GPUs) -- then ``deepspeed.init_distributed``
   wraps it and ``shard_with_deepspeed`` keeps each rank's slice of the weights;
5. each helper sets ``sharded/<rank>``; once all have, rank 0 deletes the store's directory
   (the group needs no store after set-up).

On CPU the all-reduce is plain gloo: DeepSpeed's shared-memory op is not built (it needs a
~67 s JIT compile and ``LOCAL_SIZE``, STACK-NOTES).

Per forward (a padded batch of B texts x T tokens)

Rank 0 runs the ordinary :class:`~recmind_dist.embed.encoder.TextEncoder` (tokenize once,
sort by length, pad, pool, normalise), whose model is a ``_Leader`` wrapper around the sharded
model. Before each forward the wrapper broadcasts from rank 0

* a header ``int64[4] = [FORWARD, key_mask, B, T]`` (bit i of ``key_mask`` = ``_KEYS[i]``
  present: input_ids, attention_mask, token_type_ids), then
* the present inputs stacked as one ``int64 (K, B, T)`` tensor.

Each helper rebuilds the batch and calls :meth:`TextEncoder.forward_hidden` (the same call,
same autocast as rank 0), taking part in the all-reduces; its hidden states are dropped.
Only rank 0 pools and returns vectors.

Shutdown and failures

* :meth:`TPGroup.close` broadcasts ``[STOP, 0, 0, 0]``; all ranks pass a barrier, helpers
  leave with ``os._exit(0)`` (no gloo teardown at interpreter exit), rank 0 destroys its
  group and reaps them (killing any still alive after 30 s). ``close`` also runs from
  ``__del__`` (Ray Data deletes the UDF when an actor exits gracefully) and ``atexit``.
* A helper polls its parent pid every :data:`WATCH_S` seconds and exits when the parent is
  gone (actor killed or crashed), instead of waiting out the collective timeout; it removes
  the store's directory in case rank 0 died before doing so.
* Rank 0 checks its helpers before each broadcast; a dead helper raises ``RuntimeError``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recmind_dist.specs import EmbedSpec

log = logging.getLogger(__name__)

__all__ = ["TPGroup", "load_rank_model", "sharded_encoder"]

STOP, FORWARD = 0, 1
_KEYS = ("input_ids", "attention_mask", "token_type_ids")
#: Seconds a helper waits between checks that its parent (rank 0) is still alive.
WATCH_S = 0.5
#: Start-up budget: every rank loads the full model before sharding.
START_TIMEOUT_S = 900.0
#: Collective timeout; a helper waits this long for rank 0's next batch before giving up.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


# ------------------------------------------------------------------------------------------
# one rank: load, shard, encode (shared by Ray replicas, their helpers and jobs/embed.py)
# ------------------------------------------------------------------------------------------


def _device_for(rank: int, want_cuda: bool) -> str:
    return f"cuda:{rank}" if want_cuda and torch.cuda.is_available() else "cpu"


def load_rank_model(spec: EmbedSpec, model_id: str, device: str) -> tuple[Any, nn.Module, str]:
    """``(tokenizer, full model, compute dtype)`` for one rank, before sharding."""
    from recmind_dist.embed.encoder import load_hf, resolve_dtype

    dtype = resolve_dtype(spec.dtype, device)
    weights = dtype if device.startswith("cuda") else "float32"  # CPU bf16 = autocast
    tok, model = load_hf(model_id, weights)
    return tok, model, dtype


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sharded_encoder(spec: EmbedSpec, model_id: str, device: str, threads: int | None,
                    tok: Any, model: nn.Module, dtype: str) -> tuple[Any, float]:
    """Shard ``model`` over the initialised process group and wrap it in a TextEncoder.

    Returns ``(encoder, share)``: ``share`` = this rank's parameters / the full model's (1.0
    when nothing was split; about 0.74 for MiniLM at tp 2, whose embeddings stay whole).
    """
    from recmind_dist.embed.encoder import TextEncoder, shard_with_deepspeed

    full = _n_params(model)
    weights = dtype if device.startswith("cuda") else "float32"
    model = shard_with_deepspeed(model, spec.tensor_parallel, weights)
    share = _n_params(model) / max(full, 1)
    enc = TextEncoder(model_id, pooling=spec.pooling, normalize=spec.normalize,
                      max_length=spec.max_length, dtype=dtype, device=device,
                      torch_threads=threads, tokenizer=tok, hf_model=model)
    return enc, share


def _join_group(store: Any, rank: int, world: int, device: str) -> None:
    """Join the default process group through ``store`` and let DeepSpeed wrap it."""
    import importlib

    import deepspeed

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))
    else:
        _loopback_gloo()
        try:  # plain gloo all-reduce: skip DeepSpeed's shm op (JIT build, LOCAL_SIZE)
            ds_torch = importlib.import_module("deepspeed.comm.torch")
            ds_torch.build_shm_op = lambda: None
        except (ImportError, AttributeError):  # pragma: no cover - private API moved
            log.warning("could not skip DeepSpeed's shm all-reduce build")
    torch.distributed.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank,
                                         world_size=world, timeout=COLLECTIVE_TIMEOUT)
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")


def _loopback_gloo() -> None:
    # gloo binds the address its host name resolves to unless told otherwise; the group never
    # leaves this node, so keep it on loopback.
    if "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"


def _store(path: str, world: int) -> Any:
    store = torch.distributed.FileStore(path, world)
    store.set_timeout(timedelta(seconds=START_TIMEOUT_S))
    return store


# ------------------------------------------------------------------------------------------
# rank 0
# ------------------------------------------------------------------------------------------


class _Leader(nn.Module):
    """Rank 0's model: broadcast each batch to the helpers, then run the sharded forward."""

    def __init__(self, inner: nn.Module, group: TPGroup) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self._group = weakref.ref(group)  # the group owns this module: no reference cycle

    def forward(self, **batch: torch.Tensor) -> Any:
        keys = [k for k in _KEYS if k in batch]
        extra = set(batch) - set(keys)
        if extra:
            raise ValueError(f"tensor-parallel batch has inputs {sorted(extra)} that the "
                             f"helpers would not receive (known: {_KEYS})")
        x = torch.stack([batch[k].long() for k in keys])
        mask = sum(1 << _KEYS.index(k) for k in keys)
        group = self._group()
        if group is None:
            raise RuntimeError("tensor-parallel group is gone")
        group.broadcast_batch(x, mask)
        return self.inner(**batch)


class TPGroup:
    """Rank 0 of a ``spec.tensor_parallel``-rank DeepSpeed group plus its helper processes.

    ``group.encoder`` is a :class:`~recmind_dist.embed.encoder.TextEncoder` over the sharded
    model: call ``encode``/``encode_with_lengths`` on it as usual. ``group.param_share`` is
    rank 0's share of the model's parameters (< 1 once sharded). Call :meth:`close` when done
    (also run at garbage collection and interpreter exit). See the module docstring.
    """

    def __init__(self, spec: EmbedSpec, model_id: str, cuda: bool = False,
                 threads: int | None = None) -> None:
        self.world = int(spec.tensor_parallel)
        if self.world < 2:
            raise ValueError("TPGroup needs spec.tensor_parallel >= 2")
        self._procs: list[subprocess.Popen] = []
        self._closed = False
        self._joined = False  # this process is in the group (destroy it on close)
        self._serving = False  # helpers wait for batches (stop them with a STOP header)
        if threads:
            torch.set_num_threads(int(threads))
        device = _device_for(0, cuda)
        self.device = device
        self._dir = tempfile.mkdtemp(prefix="recmind-tp-")
        store = _store(os.path.join(self._dir, "store"), self.world)
        try:
            self._start_helpers(spec, model_id, cuda, threads, os.path.join(self._dir, "store"))
            tok, model, dtype = load_rank_model(spec, model_id, device)
            self._wait_for(store, "ready", "while loading the model")
            _join_group(store, 0, self.world, device)
            self._joined = True
            enc, self.param_share = sharded_encoder(spec, model_id, device, threads, tok,
                                                    model, dtype)
            self._wait_for(store, "sharded", "while sharding")
            self._serving = True
            shutil.rmtree(self._dir, ignore_errors=True)  # the group needs no store from here
        except BaseException:
            self.close()
            raise
        enc.model = _Leader(enc.model, self)
        self.encoder = enc
        ref = weakref.ref(self)
        atexit.register(lambda: (g := ref()) is not None and g.close())
        log.info("tensor-parallel group up: %d ranks on %s, rank 0 holds %.2f of the "
                 "parameters", self.world, device, self.param_share)

    @property
    def helper_pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _start_helpers(self, spec: EmbedSpec, model_id: str, cuda: bool, threads: int | None,
                       store_path: str) -> None:
        import recmind_dist

        env = dict(os.environ)
        root = str(Path(recmind_dist.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        for rank in range(1, self.world):
            cfg = {"store": store_path, "rank": rank, "world": self.world, "cuda": cuda,
                   "threads": threads, "model_id": model_id, "spec": spec.model_dump_json(),
                   "parent": os.getpid()}
            cmd = [sys.executable, "-c",
                   "from recmind_dist.embed.tp_group import _helper_main; _helper_main()",
                   json.dumps(cfg)]
            self._procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))

    def _dead_helper(self) -> str | None:
        for rank, p in enumerate(self._procs, start=1):
            code = p.poll()
            if code is not None:
                return f"tensor-parallel helper rank {rank} (pid {p.pid}) exited with {code}"
        return None

    def _wait_for(self, store: Any, key: str, stage: str) -> None:
        """Wait until every helper has set ``<key>/<rank>``, failing fast if one exits."""
        keys = [f"{key}/{r}" for r in range(1, self.world)]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not store.check(keys):
            dead = self._dead_helper()
            if dead:
                raise RuntimeError(f"{dead} {stage}; see its log above")
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensor-parallel helpers not ready after "
                                   f"{START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    def broadcast_batch(self, x: torch.Tensor, key_mask: int) -> None:
        """Send one stacked ``(K, B, T)`` batch to the helpers (rank 0 side)."""
        if self._closed:
            raise RuntimeError("tensor-parallel group is closed")
        dead = self._dead_helper()
        if dead:
            raise RuntimeError(dead)
        _, b, t = x.shape
        hdr = torch.tensor([FORWARD, key_mask, b, t], dtype=torch.long, device=x.device)
        torch.distributed.broadcast(hdr, 0)
        torch.distributed.broadcast(x.contiguous(), 0)

    def close(self) -> None:
        """Stop the helpers and leave the process group; idempotent."""
        if getattr(self, "_closed", True):  # closed, or the constructor failed before setup
            return
        self._closed = True
        dist = torch.distributed
        stopped = False
        if self._serving and dist.is_initialized() and self._dead_helper() is None:
            try:
                hdr = torch.tensor([STOP, 0, 0, 0], dtype=torch.long,
                                   device=torch.device(self.device))
                dist.broadcast(hdr, 0)
                dist.barrier()
                stopped = True
            except RuntimeError as e:  # a helper died in the meantime
                log.warning("tensor-parallel shutdown: %s", e)
        if self._joined and dist.is_initialized():
            dist.destroy_process_group()
        for p in self._procs:
            if not stopped and p.poll() is None:
                p.kill()  # start-up failed or a peer died: it would wait on a dead group
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception as e:  # noqa: BLE001 - garbage collection must not raise
            log.warning("tensor-parallel group close failed: %s", e)


# ------------------------------------------------------------------------------------------
# helper ranks
# ------------------------------------------------------------------------------------------


def _watch_parent(parent: int, store_dir: str) -> None:
    def run() -> None:
        while True:
            if os.getppid() != parent:  # rank 0 is gone: nobody will send the next batch
                shutil.rmtree(store_dir, ignore_errors=True)  # rank 0 could not remove it
                os._exit(3)
            time.sleep(WATCH_S)

    threading.Thread(target=run, name="tp-parent-watch", daemon=True).start()


def _helper_main(argv: list[str] | None = None) -> None:
    """Entry point of ranks 1..N-1 (one JSON argument; see :meth:`TPGroup._start_helpers`)."""
    cfg = json.loads((argv or sys.argv[1:])[0])
    _watch_parent(int(cfg["parent"]), os.path.dirname(cfg["store"]))
    logging.basicConfig(level=logging.WARNING)
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    rank, world = int(cfg["rank"]), int(cfg["world"])
    spec = EmbedSpec.model_validate_json(cfg["spec"])
    device = _device_for(rank, bool(cfg["cuda"]))
    store = _store(cfg["store"], world)
    tok, model, dtype = load_rank_model(spec, cfg["model_id"], device)
    store.set(f"ready/{rank}", "1")
    _join_group(store, rank, world, device)
    enc, _ = sharded_encoder(spec, cfg["model_id"], device, cfg["threads"], tok, model, dtype)
    store.set(f"sharded/{rank}", "1")  # rank 0 removes the store's directory after this
    dist = torch.distributed
    hdr = torch.empty(4, dtype=torch.long, device=enc.device)
    with torch.inference_mode():
        while True:
            dist.broadcast(hdr, 0)
            cmd, mask, b, t = (int(v) for v in hdr.tolist())
            if cmd == STOP:
                break
            keys = [k for i, k in enumerate(_KEYS) if mask >> i & 1]
            x = torch.empty((len(keys), b, t), dtype=torch.long, device=enc.device)
            dist.broadcast(x, 0)
            enc.forward_hidden(dict(zip(keys, x, strict=True)))
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
