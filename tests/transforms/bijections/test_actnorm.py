"""ActNorm: data-dependent init, checkpoints, distributed init, invertibility, ldj."""

import socket

import pytest
import torch
import torch.distributed as dist

from survae import registry
from survae.errors import ShapeError
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.bijections.actnorm import ActNorm


def _per_channel(z):
    dims = [0, *range(2, z.dim())]
    return z.mean(dims), z.std(dims, correction=0)


def test_registered():
    assert registry.get("layer", "actnorm") is ActNorm


@pytest.mark.parametrize("shape", [(64, 3), (16, 3, 5), (8, 3, 4, 4)])
def test_data_init_normalises_first_batch(shape):
    layer = ActNorm(3)
    x = torch.randn(shape) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, *[1] * (len(shape) - 2))
    x = x + torch.tensor([1.0, -4.0, 0.3]).view(1, 3, *[1] * (len(shape) - 2))
    assert not layer._initialized and not bool(layer.initialized)
    z, ldj = layer(x)
    mean, std = _per_channel(z)
    torch.testing.assert_close(mean, torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.ones(3), atol=1e-4, rtol=0)
    assert layer._initialized and bool(layer.initialized)
    # second batch does not re-initialise
    params = [p.detach().clone() for p in layer.parameters()]
    layer(torch.randn(shape) * 10)
    for p, q in zip(params, layer.parameters()):
        assert torch.equal(p, q)
    spatial = 1 if len(shape) == 2 else int(torch.tensor(shape[2:]).prod())
    torch.testing.assert_close(ldj, (spatial * layer.log_scale.sum()).expand(shape[0]))


def test_no_init_in_eval_mode():
    layer = ActNorm(3).eval()
    x = torch.randn(4, 3) * 5
    z, ldj = layer(x)
    torch.testing.assert_close(z, x)
    assert not layer._initialized


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3), (2, 4, 4, 4)])
def test_invertible_train_and_eval_and_logdet(shape):
    layer = ActNorm(4).double()
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    # training: the first forward initialises, the round trip must still hold
    z, _ = assert_invertible(layer, x, atol=1e-9, rtol=1e-9)
    assert layer._initialized and z.shape == x.shape
    assert_logdet_matches_autograd(layer, x)
    layer.eval()
    assert_invertible(layer, torch.randn(shape, dtype=torch.float64), atol=1e-9, rtol=1e-9)
    assert_logdet_matches_autograd(layer, x)


def test_state_dict_round_trip_does_not_reinit():
    layer = ActNorm(3)
    layer(torch.randn(32, 3) * 4 + 2)
    state = layer.state_dict()
    assert "initialized" in state and bool(state["initialized"])
    fresh = ActNorm(3)
    fresh.load_state_dict(state)
    assert fresh._initialized
    x = torch.randn(16, 3) * 100 - 7  # very different statistics
    fresh.train()
    z_fresh, _ = fresh(x)
    z_ref, _ = layer(x)
    torch.testing.assert_close(z_fresh, z_ref)
    torch.testing.assert_close(fresh.loc, layer.loc)
    # and loading an uninitialised state resets the flag
    fresh.load_state_dict(ActNorm(3).state_dict())
    assert not fresh._initialized


def test_wrong_shape():
    layer = ActNorm(3)
    with pytest.raises(ShapeError, match=r"ActNorm.*\(\*, 3, 4, 4\).*\(2, 5, 4, 4\)"):
        layer(torch.randn(2, 5, 4, 4))
    with pytest.raises(ShapeError, match="ActNorm.*latent"):
        layer.inverse(torch.randn(2, 3, 4, 4, 1))
    assert not layer._initialized  # a failed call must not initialise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_init_under_distributed(monkeypatch):
    calls = []
    real = dist.all_reduce

    def spy(tensor, *args, **kwargs):
        calls.append(tensor.shape)
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(dist, "all_reduce", spy)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        layer = ActNorm(3)
        x = torch.randn(8, 3, 2, 2) * 3 + 1
        z, _ = layer(x)
        assert calls == [torch.Size([7])]  # sums, sums of squares and the count, in one call
        mean, std = _per_channel(z)
        torch.testing.assert_close(mean, torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(std, torch.ones(3), atol=1e-4, rtol=0)
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()


def _two_rank_worker(rank: int, port: int, queue) -> None:
    torch.set_num_threads(1)  # forked child: avoid the parent's thread pools
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        data = torch.randn(2, 10, 3) * torch.tensor([1.0, 2.0, 3.0]) + torch.tensor([0.0, 5, -5])
        layer = ActNorm(3)
        layer(data[rank] * (rank + 1))  # the ranks see different halves of the global batch
        queue.put((rank, layer.loc.tolist(), layer.log_scale.tolist()))  # plain lists: no fds
    finally:
        dist.destroy_process_group()


def test_data_init_uses_global_batch_over_two_ranks():
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_two_rank_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted((queue.get(timeout=30) for _ in range(2)), key=lambda r: r[0])
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    torch.manual_seed(0)
    data = torch.randn(2, 10, 3) * torch.tensor([1.0, 2.0, 3.0]) + torch.tensor([0.0, 5, -5])
    full = torch.cat([data[0], data[1] * 2])
    ref = ActNorm(3)
    ref(full)
    for _, loc, log_scale in results:
        torch.testing.assert_close(torch.tensor(loc), ref.loc.detach())
        torch.testing.assert_close(torch.tensor(log_scale), ref.log_scale.detach())


def test_log_scale_factor_stores_the_log_scale_divided_and_keeps_the_function():
    """openai/glow's logscale_factor: the parameter holds log_scale / factor; after the same
    data-dependent initialisation both layers are the same function with the same log-det."""
    from survae.transforms.bijections.actnorm import ActNorm

    x = torch.randn(16, 3, 4, 4) * torch.tensor([0.5, 2.0, 3.0]).view(1, 3, 1, 1) + 1.0
    plain, glow = ActNorm(3), ActNorm(3, log_scale_factor=3.0)
    z1, ldj1 = plain(x)
    z3, ldj3 = glow(x)
    torch.testing.assert_close(glow.log_scale * 3.0, plain.log_scale)
    torch.testing.assert_close(z3, z1)
    torch.testing.assert_close(ldj3, ldj1)
    torch.testing.assert_close(glow.inverse(z3), x, atol=1e-5, rtol=1e-5)
    # the gradient reaches the stored parameter multiplied by the factor
    glow(x)[1].sum().backward()
    plain(x)[1].sum().backward()
    torch.testing.assert_close(glow.log_scale.grad, 3.0 * plain.log_scale.grad)
    with pytest.raises(ValueError, match="log_scale_factor must be > 0"):
        ActNorm(3, log_scale_factor=0.0)


def test_data_init_is_openais_formula_on_a_known_batch():
    # openai/glow tfops.actnorm: b = -mean, logs = log(1 / (sqrt(var) + 1e-6)) / logscale_factor;
    # channel 1 has std 1e-6, where 1/sqrt(var + 1e-6) would be about 500 times smaller
    x = torch.tensor([[1.0, 0.0], [3.0, 2e-6]], dtype=torch.float64).view(2, 2, 1, 1)
    an = ActNorm(2, log_scale_factor=3.0).double()
    z, ldj = an(x.repeat(1, 1, 2, 3))
    std = torch.tensor([1.0, 1e-6], dtype=torch.float64)
    torch.testing.assert_close(an.loc, torch.tensor([2.0, 1e-6], dtype=torch.float64))
    torch.testing.assert_close(an.log_scale, torch.log(1 / (std + 1e-6)) / 3)
    torch.testing.assert_close(ldj, torch.log(1 / (std + 1e-6)).sum().expand(2) * 6)
