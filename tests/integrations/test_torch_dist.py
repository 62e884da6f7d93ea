"""weighttui.torch.watch under torch.distributed: DDP and FSDP2 (fully_shard), two
CPU processes on the gloo backend.

Each test starts two real worker processes (this file run as a script, with the
usual MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE environment); the workers train
and check the log themselves against the numpy reference over the full
tensors, and exit non-zero on a failed check.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(mode: str, tmp_path, world: int = 2):
    pytest.importorskip("torch")
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, __file__, mode, str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(out)
    for rank, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"rank {rank} failed:\n{out}"
    return outs


def test_ddp_only_rank0_writes_and_other_ranks_do_nothing(tmp_path):
    outs = _launch("ddp", tmp_path)
    assert "rank 0 ok" in outs[0] and "rank 1 ok" in outs[1]


def test_fsdp2_statistics_describe_the_whole_tensor(tmp_path):
    outs = _launch("fsdp", tmp_path)
    assert "rank 0 ok" in outs[0] and "rank 1 ok" in outs[1]


def test_fsdp2_instruments_equal_the_float64_references_over_whole_tensors(tmp_path):
    outs = _launch("fsdp_inst", tmp_path)
    assert "rank 0 ok" in outs[0] and "rank 1 ok" in outs[1]


def test_fsdp2_sigma_max_of_big_matrices_within_1e3_of_the_svd(tmp_path):
    outs = _launch("fsdp_sigma", tmp_path)
    assert "rank 0 ok" in outs[0] and "rank 1 ok" in outs[1]


def test_fsdp2_instruments_of_tensors_sharded_on_their_columns(tmp_path):
    outs = _launch("fsdp_cols", tmp_path)
    assert "rank 0 ok" in outs[0] and "rank 1 ok" in outs[1]
    # the spectral columns it cannot record: said once, by the writing rank
    said = [line for out in outs for line in out.splitlines() if "not recorded for tensors sharded" in line]
    assert len(said) == 1 and said[0].startswith("weighttui: sigma_max")


# ---------------------------------------------------------------- the workers


def _data(rank):
    import torch

    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(16, 8, generator=g)
    return x, (x[:, :1] - x[:, 1:2]).tanh()


def _mlp():
    import torch

    torch.manual_seed(0)
    # 33 hidden units: shards of uneven size; 2.bias has one element, so one rank
    # holds an empty shard of it
    return torch.nn.Sequential(torch.nn.Linear(8, 33), torch.nn.Tanh(), torch.nn.Linear(33, 1))


def _ddp_worker(rank, world, out_dir):
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import weighttui
    import weighttui.torch as wt
    from weighttui.record import stats

    path = os.path.join(out_dir, "ddp.wtui")
    model = DDP(_mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = wt.watch(model, path, optimizer=opt, every=2)
    x, y = _data(rank)
    for _ in range(4):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if rank != 0:
        # nothing costly: no recorder, no hooks on the optimizer, no statistics
        assert not h.active and h.recorder is None
        assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    h.close()
    dist.barrier()
    if rank == 0:
        run = weighttui.open(path)
        assert len(run.runs) == 1 and run.run.pid == os.getpid()  # one writer: this process
        assert list(run.steps) == [0, 2, 4]
        assert run.tensor_names == ["0.weight", "0.bias", "2.weight", "2.bias"]  # no "module." prefix
        for name, p in model.module.named_parameters():
            ref = stats.weight_stats(p.detach().numpy())
            np.testing.assert_allclose(run.stat_matrix("weights", "norm")[-1, run.tensor_names.index(name)],
                                       ref[5], rtol=2e-6)
    print(f"rank {rank} ok", flush=True)


def _fsdp_worker(rank, world, out_dir):
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    import weighttui
    import weighttui.torch as wt
    from weighttui.record import stats

    path = os.path.join(out_dir, "fsdp.wtui")
    model = _mlp()
    for m in model:
        if isinstance(m, torch.nn.Linear):
            fully_shard(m)
    fully_shard(model)
    local = {n: tuple(p.to_local().shape) for n, p in model.named_parameters()}
    assert local["0.weight"][0] != 33  # really sharded
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    h = wt.watch(model, path, optimizer=opt, full_every=3, sample=8)
    x, y = _data(rank)
    full_w, full_g = {}, {}
    for step in range(1, 4):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        full_w[step] = {n: p.full_tensor().detach().numpy().copy() for n, p in model.named_parameters()}
        full_g[step] = {n: p.grad.full_tensor().numpy().copy() for n, p in model.named_parameters()}
    # a NaN in one rank's shard only: the masked pass must run on every rank
    with torch.no_grad():
        w0 = dict(model.named_parameters())["0.weight"]
        if rank == 1:
            w0.to_local()[0, 0] = float("nan")
    opt.step()
    nan_full = {n: p.full_tensor().detach().numpy().copy() for n, p in model.named_parameters()}
    h.close()
    dist.barrier()
    if rank == 0:
        run = weighttui.open(path)
        assert list(run.steps) == [0, 1, 2, 3, 4]
        names = run.tensor_names
        assert [tuple(t.shape) for t in run.tensors] == [(33, 8), (33,), (1, 33), (1,)]  # global shapes
        for name in names:
            col = names.index(name)
            w, g = full_w[3][name], full_g[3][name]
            row = np.array([run.stat_matrix("weights", s)[3, col] for s in stats.WEIGHT_STATS])
            ref = stats.weight_stats(w)
            np.testing.assert_allclose(row, ref, rtol=5e-6, atol=2e-6 * ref[4])
            grow = np.array([run.stat_matrix("grad", s)[3, col] for s in stats.WEIGHT_STATS])
            gref = stats.weight_stats(g)
            np.testing.assert_allclose(grow, gref, rtol=5e-6, atol=2e-6 * gref[4])
            _, lo, hi, counts = run.histograms(name, "weights")
            rlo, rhi, rcounts = stats.histogram(w, run.run.bins)
            assert (lo[3], hi[3]) == (rlo, rhi)
            assert counts[3].sum() == rcounts.sum()
            assert np.abs(counts[3].astype(int) - rcounts.astype(int)).sum() <= 4  # float32 edges
            dref = stats.delta_stats(w, full_w[2][name])
            drow = np.array([run.stat_matrix("delta", s)[3, col] for s in stats.DELTA_STATS])
            np.testing.assert_allclose(drow, dref, rtol=1e-5)
            _, samples = run.samples(name)
            idx = run.tensor(name).sample_index
            np.testing.assert_array_equal(samples[3], w.reshape(-1)[idx])
            np.testing.assert_array_equal(run.weights(step=3)[name], w)
        col = names.index("0.weight")
        assert run.stat_matrix("weights", "nan")[4, col] == 1
        ref = stats.weight_stats(nan_full["0.weight"])
        np.testing.assert_allclose(run.stat_matrix("weights", "std")[4, col], ref[1], rtol=5e-6)
        assert any(e.kind == "nonfinite" for e in run.events)
    else:
        assert h.recorder is None and h.schedule is not None  # computed its part, wrote nothing
    print(f"rank {rank} ok", flush=True)


def _fsdp_instruments_worker(rank, world, out_dir):
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    import weighttui
    import weighttui.torch as wt

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from instrument_check import check_log, check_optim

    torch.manual_seed(0)
    # 33 and 40 rows: uneven shards; 3.weight (40 x 33): an 8-vector block of 33 (a real iteration)
    model = torch.nn.Sequential(torch.nn.Linear(8, 33), torch.nn.Tanh(), torch.nn.Linear(33, 40), torch.nn.Tanh(),
                                torch.nn.Linear(40, 1))
    for m in model:
        if isinstance(m, torch.nn.Linear):
            fully_shard(m)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.01)
    path = os.path.join(out_dir, "fsdp_inst.wtui")
    # cos_sample 64: the cosines' coordinates fall in both ranks' shards of the matrices
    h = wt.watch(model, path, optimizer=opt, full_every=1, instruments={"cos_sample": 64})
    x, y = _data(rank)
    grads = {}
    steps = 16
    for step in range(1, steps + 1):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        if step == steps:  # a NaN in rank 1's shard of one gradient: the origin is found across the shards
            g = dict(model.named_parameters())["2.weight"].grad
            if rank == 1:
                g.to_local()[3, 5] = float("nan")
        grads[step] = {n: p.grad.full_tensor().double().numpy().copy() for n, p in model.named_parameters()}
        opt.step()
        if step == steps - 1:  # the optimizer state before the NaN (collectives: every rank)
            state = {n: (opt.state[p]["exp_avg"].full_tensor().numpy(),
                         opt.state[p]["exp_avg_sq"].full_tensor().numpy(), float(opt.state[p]["step"]))
                     for n, p in model.named_parameters()}
    h.close()
    dist.barrier()
    if rank == 0:
        run = weighttui.open(path)
        assert run.steps.tolist() == list(range(steps + 1))
        counts = check_log(path, {s: g for s, g in grads.items() if s < steps}, warm_after=8, cos_sample=64)
        assert counts["sigma_max"] >= 3 * 9 and counts["cos_grad"] >= 6 * (steps - 3)
        assert counts["grad_units"] >= 3 * (steps - 1) and counts["sigma_ratio"] >= 3 * 7
        check_optim(path, state, lr=3e-2, beta2=0.999, eps=1e-8, at=-2)
        _, bad = run.series("2.weight", "nonfinite", kind="optim")
        assert bad[-1] == 2  # the NaN gradient's element in both moments (counted across the shards)
        # alpha every 10 snapshots of matrices >= 10 x 10 (3.weight: 40 x 33), the matrix gathered
        from weighttui.record import instruments as inst

        steps_a, alpha = run.series("2.weight", "alpha")
        assert steps_a[np.isfinite(alpha)].tolist() == [0, 10]
        w10 = run.weights(step=10)["2.weight"].astype(np.float64)
        assert alpha[10] == pytest.approx(inst.powerlaw_alpha(np.linalg.svd(w10, compute_uv=False) ** 2), rel=1e-3)
        origins = [e for e in run.events if e.kind == "nan_origin"]
        assert len(origins) == 1 and origins[0].step == steps
        at = int(np.flatnonzero(np.isnan(grads[steps]["2.weight"]))[0])  # rank 1's [3, 5] in the whole tensor
        assert at == 23 * 33 + 5  # rows 20..39 are rank 1's
        assert f"gradient of 2.weight at flat index {at}," in origins[0].message, origins[0].message
    print(f"rank {rank} ok", flush=True)


def _fsdp_cols_worker(rank, world, out_dir):
    """Matrices sharded on dimension 1 (every rank part of each row): norms, units, cosines and
    optimizer state summed over partial rows; the spectral columns NaN (said once)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    import weighttui
    import weighttui.torch as wt

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from instrument_check import check_log, check_optim

    torch.manual_seed(0)
    # FSDP2 shards dimension 1 evenly only: 8 and 34 columns
    model = torch.nn.Sequential(torch.nn.Linear(8, 34), torch.nn.Tanh(), torch.nn.Linear(34, 1))
    for m in model:
        if isinstance(m, torch.nn.Linear):
            fully_shard(m, shard_placement_fn=lambda p: Shard(1) if p.ndim == 2 else Shard(0))
    fully_shard(model)
    assert tuple(dict(model.named_parameters())["0.weight"].to_local().shape) == (34, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    path = os.path.join(out_dir, "fsdp_cols.wtui")
    h = wt.watch(model, path, optimizer=opt, full_every=1, instruments={"cos_sample": 64})
    x, y = _data(rank)
    grads = {}
    for step in range(1, 6):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        grads[step] = {n: p.grad.full_tensor().double().numpy().copy() for n, p in model.named_parameters()}
        opt.step()
    state = {n: (opt.state[p]["exp_avg"].full_tensor().numpy(), opt.state[p]["exp_avg_sq"].full_tensor().numpy(),
                 float(opt.state[p]["step"])) for n, p in model.named_parameters()}
    h.close()
    dist.barrier()
    if rank == 0:
        counts = check_log(path, grads, warm_after=0, cos_sample=64, sigma=False)
        assert counts["units"] == 2 * 6 and counts["grad_units"] == 2 * 5 and counts["cos_grad"] == 4 * 4
        check_optim(path, state, lr=1e-2, beta2=0.999, eps=1e-8)
        run = weighttui.open(path)
        assert [e.kind for e in run.events].count("instrument_unsupported") == 1
    print(f"rank {rank} ok", flush=True)


def _fsdp_sigma_worker(rank, world, out_dir):
    """sigma_max of matrices over 65,536 elements sharded by rows (512 x 256, 384 x 512), AdamW, a
    snapshot every 10 steps: within 1e-3 of the SVD at every snapshot (the Lanczos steps' products
    summed over the ranks)."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    import weighttui
    import weighttui.torch as wt
    from weighttui.record import instruments as inst

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 384),
                                torch.nn.ReLU(), torch.nn.Linear(384, 10))
    for m in model:
        if isinstance(m, torch.nn.Linear):
            fully_shard(m)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    path = os.path.join(out_dir, "fsdp_sigma.wtui")
    h = wt.watch(model, path, optimizer=opt, every=10, full_every=10, instruments=["sigma"])
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(256, 10, generator=gen)
    gen.manual_seed(2 + rank)
    for _ in range(60):
        x = torch.randn(64, 256, generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), (x @ teacher).argmax(1)).backward()
        opt.step()
    h.close()
    dist.barrier()
    if rank == 0:
        run = weighttui.open(path)
        for name in ("0.weight", "2.weight", "4.weight"):
            steps, sig = run.series(name, "sigma_max")
            ref = np.array([inst.sigma_max_ref(run.weights(step=s)[name]) for s in steps.tolist()])
            err = (ref - sig) / ref
            assert len(err) == 7 and np.max(np.abs(err)) < 1e-3, (name, err)
    print(f"rank {rank} ok", flush=True)


if __name__ == "__main__":
    import torch.distributed as dist

    mode, out_dir = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    try:
        workers = {"ddp": _ddp_worker, "fsdp": _fsdp_worker, "fsdp_inst": _fsdp_instruments_worker,
                   "fsdp_cols": _fsdp_cols_worker, "fsdp_sigma": _fsdp_sigma_worker}
        workers[mode](dist.get_rank(), dist.get_world_size(), out_dir)
        # every rank reaches here before any tears gloo down: a rank that destroys its process group
        # while a peer is still inside it can abort with "terminate called without an active exception"
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # gloo's background threads can still be joinable when C++ static destructors run at
    # interpreter exit, which aborts with "terminate called without an active exception"
    # (seen under load on 2 cores, after every check had passed); the workers have closed
    # their logs and printed their verdicts, so leave without running those destructors.
    sys.stdout.flush()
    os._exit(0)
