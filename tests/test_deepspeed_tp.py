"""DeepSpeed AutoTP over 2 gloo ranks on CPU: sharded MiniLM == unsharded MiniLM."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "A 24-year-old M technician. Top genres: Drama, Comedy. Liked: Star Wars; Fargo.",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller.",
    "",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    import importlib

    import deepspeed

    ds_torch = importlib.import_module("deepspeed.comm.torch")  # (attribute 'torch' is torch)

    # Plain gloo all-reduce instead of DeepSpeed's shared-memory op: no ~67 s JIT build and
    # no LOCAL_SIZE requirement (see STACK-NOTES).
    ds_torch.build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    from recmind_dist.embed.encoder import TextEncoder, load_hf, shard_with_deepspeed

    tok, model = load_hf(None)
    full_q = model.encoder.layer[0].attention.self.query.weight.shape[0]
    sharded = shard_with_deepspeed(model, world)
    enc = TextEncoder(tokenizer=tok, hf_model=sharded, device="cpu", dtype="float32")
    vec = enc.encode(TEXTS, batch_size=2)
    q = sharded.encoder.layer[0].attention.self.query.weight.shape[0]
    if rank == 0:
        np.save(out, vec)
        Path(out + ".shapes").write_text(f"{full_q} {q}")
    from _dist_helpers import end_worker

    end_worker()


@pytest.mark.slow
def test_tp2_minilm_matches_unsharded(tmp_path: Path) -> None:
    from recmind_dist.embed.encoder import TextEncoder

    out = str(tmp_path / "tp.npy")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    full_q, q = map(int, Path(out + ".shapes").read_text().split())
    assert q == full_q // 2  # the weights really are split over the two ranks
    tp = np.load(out)
    ref = TextEncoder(device="cpu", dtype="float32").encode(TEXTS, batch_size=2)
    diff = float(np.abs(tp - ref).max())
    print(f"TP=2 vs unsharded max |diff| = {diff:.3g}")
    assert diff < 1e-5


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


_RANK0 = """
import sys, time
from recmind_dist.specs import EmbedSpec
from recmind_dist.embed.tp_group import TPGroup

def hang(group, store):  # rank 0 stops before joining the group; its helper waits in it
    print("HELPER", group.helper_pids[0], flush=True)
    time.sleep(600)

if sys.argv[2] == "starting":
    TPGroup._wait_ready = hang
g = TPGroup(EmbedSpec(model=sys.argv[1], tensor_parallel=2, dtype="float32"), sys.argv[1],
            threads=1)
assert g.encoder.encode(["a b c", "d"], batch_size=2).shape == (2, 32)
print("HELPER", g.helper_pids[0], flush=True)  # helper now waits for the next batch
time.sleep(600)
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("phase", ["starting", "serving"])
def test_tp_helpers_exit_when_rank0_dies(tiny_bert: Path, phase: str) -> None:
    """A replica (rank 0) killed with SIGKILL -- no close(), no atexit -- must not leave its
    tensor-parallel helper behind: neither while the group starts (the helper waits in the
    rendezvous, only its parent watch ends it) nor while it waits for the next batch."""
    import subprocess
    import sys
    import time

    rank0 = subprocess.Popen([sys.executable, "-c", _RANK0, str(tiny_bert), phase],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("HELPER "):  # DeepSpeed prints to stdout too
            line = rank0.stdout.readline()
            assert line, "rank 0 exited before its group was up"
        helper = int(line.split()[1])
        time.sleep(1.0 if phase == "starting" else 0)  # let the helper reach the rendezvous
        assert not _gone(helper)
    finally:
        rank0.kill()
        rank0.wait()
    deadline = time.monotonic() + 10
    while not _gone(helper) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(helper)
