"""MemorySavingBlock: same values and gradients as plain autograd, activation memory that does
not grow with depth, data-dependent init, context, dropout, and refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from survae.models import build_model
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.base import Sequential
from survae.transforms.bijections.actnorm import ActNorm
from survae.transforms.bijections.batchnorm import BatchNormBijection
from survae.transforms.bijections.conv1x1 import Conv1x1LU
from survae.transforms.bijections.coupling import AdditiveCoupling, AffineCoupling
from survae.transforms.bijections.permutation import Reverse
from survae.transforms.bijections.squeeze import Squeeze2d
from survae.transforms.memory import MemorySavingBlock, is_reconstructible
from survae.transforms.surjections.slicing import Slice


def _conv_net(hidden: int = 8) -> dict:
    # a non-zero last layer, so that every coupling does something
    return {"name": "conv_net", "hidden_channels": hidden, "zero_init_output": False}


def _randomise_zero_convs(module: nn.Module) -> None:
    """glow_net's output convolution starts at zero; give it small random weights."""
    for name, p in module.named_parameters():
        if ".out." in f".{name}":
            with torch.no_grad():
                p.normal_(0.0, 0.05)


def image_stack(depth: int, channels: int = 2, hidden: int = 8, net: str = "conv") -> list:
    """Squeeze, then ``depth`` Glow steps (actnorm, LU 1×1 conv, affine coupling), with an
    additive checkerboard coupling on glow_net in between when ``net == "glow"``."""
    c = 4 * channels
    layers: list = [Squeeze2d()]
    for i in range(depth):
        spec = (
            _conv_net(hidden) if net == "conv" else {"name": "glow_net", "hidden_channels": hidden}
        )
        step = [ActNorm(c), Conv1x1LU(c), AffineCoupling(c, net=spec, reverse_mask=i % 2 == 1)]
        if net == "glow":
            step.append(AdditiveCoupling(c, net=spec, mask="checkerboard"))
        layers.append(Sequential(step))
    return layers


def _grads(layers: nn.Module, x: torch.Tensor, context=None):
    z, ldj = layers(x, context)
    loss = (z**2).sum() * 0.3 + (z.sin()).sum() - ldj.sum()  # uses z and ldj non-trivially
    inputs = [x] + ([context] if context is not None else []) + list(layers.parameters())
    return z, ldj, torch.autograd.grad(loss, inputs, allow_unused=True)


def _assert_same(plain, saving, atol=1e-5, rtol=1e-5):
    z1, ldj1, g1 = plain
    z2, ldj2, g2 = saving
    torch.testing.assert_close(z2, z1, atol=atol, rtol=rtol)
    torch.testing.assert_close(ldj2, ldj1, atol=atol, rtol=rtol)
    assert len(g1) == len(g2)
    for i, (a, b) in enumerate(zip(g1, g2)):
        assert (a is None) == (b is None), f"gradient {i}: one is None"
        if a is not None:
            torch.testing.assert_close(b, a, atol=atol, rtol=rtol, msg=f"gradient {i} differs")


@pytest.mark.parametrize("net", ["conv", "glow"])
def test_gradients_equal_plain_autograd(net):
    plain = Sequential(image_stack(3, net=net)).double().train()
    if net == "glow":
        _randomise_zero_convs(plain)
    saving = MemorySavingBlock(copy.deepcopy(list(plain.transforms)))
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    # first call: data-dependent initialisation (ActNorm and glow_net's actnorm) happens here
    _assert_same(_grads(plain, x), _grads(saving, x))
    for a, b in zip(plain.parameters(), saving.parameters()):
        torch.testing.assert_close(a, b)  # both initialised from the same data
    # later calls, on new data; also in evaluation mode
    x2 = torch.randn(4, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    _assert_same(_grads(plain, x2), _grads(saving, x2))
    plain.eval()
    saving.eval()
    _assert_same(_grads(plain, x2), _grads(saving, x2))


def test_only_parameter_gradients_when_input_needs_none():
    plain = Sequential(image_stack(2)).double()
    saving = MemorySavingBlock(copy.deepcopy(list(plain.transforms)))
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)  # data: no gradient wanted
    for model in (plain, saving):
        model(x)  # initialise
    z1, ldj1 = plain(x)
    z2, ldj2 = saving(x)
    g1 = torch.autograd.grad((z1**2).sum() - ldj1.sum(), list(plain.parameters()))
    g2 = torch.autograd.grad((z2**2).sum() - ldj2.sum(), list(saving.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_context_gradients_equal_plain_autograd():
    c = 4
    layers = [
        ActNorm(c),
        AffineCoupling(c, net=_conv_net(), context_channels=3),
        Conv1x1LU(c),
        AffineCoupling(c, net=_conv_net(), context_channels=3, reverse_mask=True),
    ]
    plain = Sequential(layers).double()
    saving = MemorySavingBlock(copy.deepcopy(layers))
    x = torch.randn(3, c, 4, 4, dtype=torch.float64, requires_grad=True)
    context = torch.randn(3, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    _assert_same(_grads(plain, x, context), _grads(saving, x, context))


def test_invertible_and_logdet_matches_autograd():
    block = MemorySavingBlock(image_stack(1, hidden=4)).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    block.train()
    assert_invertible(block, x)  # also initialises the actnorm
    block.eval()
    assert_invertible(block, x)
    # the Jacobian comes from backward passes through the reconstructing function
    assert_logdet_matches_autograd(block, x[:1])


def _saved_bytes(fn) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for backward while ``fn``
    runs (the activation memory a backward pass needs), and ``fn``'s result."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, nn.Parameter):
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def test_saved_activation_memory_does_not_grow_with_depth():
    x = torch.randn(8, 2, 8, 8)
    measured = {}
    for depth in (2, 8):
        for saving in (False, True):
            layers = image_stack(depth, hidden=16)
            model = MemorySavingBlock(layers) if saving else Sequential(layers)
            with torch.no_grad():
                model(x)  # data-dependent initialisation outside the measurement
            nbytes, out = _saved_bytes(lambda m=model: m(x))
            assert out[0].requires_grad
            measured[depth, saving] = nbytes
    plain_ratio = measured[8, False] / measured[2, False]
    saving_ratio = measured[8, True] / measured[2, True]
    assert plain_ratio > 3.0, measured  # plain autograd: linear in depth
    assert saving_ratio < 1.01, measured  # memory-saving block: the output only
    assert measured[8, True] * 20 < measured[8, False], measured


def test_dropout_networks_replay_random_state():
    net = {"name": "mlp", "hidden": [32, 32], "dropout": 0.3}
    layers = [AffineCoupling(4, net=net, scale_fn="tanh_exp")]
    layers += [Reverse(4), AffineCoupling(4, net=net, scale_fn="tanh_exp")]
    plain = Sequential(layers).double().train()
    saving = MemorySavingBlock(copy.deepcopy(layers)).train()
    for m in plain.modules():  # make the couplings non-trivial
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.3)
    saving.load_state_dict(plain.state_dict())
    x = torch.randn(16, 4, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(1)
    result_plain = _grads(plain, x)
    after_plain = torch.rand(3)
    torch.manual_seed(1)
    result_saving = _grads(saving, x)
    after_saving = torch.rand(3)
    _assert_same(result_plain, result_saving)
    # the backward pass leaves the global random stream where plain autograd leaves it
    torch.testing.assert_close(after_saving, after_plain)


def test_parameter_changed_before_backward_raises():
    block = MemorySavingBlock(image_stack(1))
    x = torch.randn(2, 2, 4, 4)
    block(x)
    z, ldj = block(x)
    with torch.no_grad():
        next(block.parameters()).add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        (z.sum() + ldj.sum()).backward()


def test_no_grad_and_frozen_paths_run_plainly():
    block = MemorySavingBlock(image_stack(2)).double()
    plain = Sequential(copy.deepcopy(list(block.transforms)))
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        z1, l1 = block(x)
        z2, l2 = plain(x)
    torch.testing.assert_close(z1, z2)
    torch.testing.assert_close(l1, l2)
    block.requires_grad_(False)
    z, ldj = block(x)
    assert not z.requires_grad and z.grad_fn is None


def test_refuses_layers_that_cannot_be_reconstructed():
    assert is_reconstructible(Sequential([ActNorm(4), Reverse(4)]))
    with pytest.raises(ValueError, match="layer 1 cannot be wrapped.*not a bijection"):
        MemorySavingBlock([ActNorm(4), Slice(4, 2)])
    with pytest.raises(ValueError, match="batch statistics"):
        MemorySavingBlock([Sequential([ActNorm(4), BatchNormBijection(4)])])
    resnet = {"name": "resnet", "hidden_channels": 8, "num_blocks": 1, "norm": "batch"}
    with pytest.raises(ValueError, match="contains BatchNorm2d"):
        MemorySavingBlock([AffineCoupling(4, net=resnet)])
    with pytest.raises(ValueError, match="at least one layer"):
        MemorySavingBlock([])


def test_registered_and_buildable_from_a_config():
    spec = {
        "layers": [
            {
                "name": "invertible_block",
                "layers": [
                    {"name": "actnorm", "num_channels": 2},
                    {"name": "affine_coupling", "num_channels": 2, "net": "mlp"},
                    {"name": "reverse", "num_channels": 2},
                ],
            }
        ]
    }
    model = build_model(spec, (2,))
    assert isinstance(model.transforms[0], MemorySavingBlock)
    x = torch.randn(5, 2)
    lp = model.log_prob(x)
    lp.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_anchors_store_every_kth_input_and_stop_drift():
    x = torch.randn(4, 2, 8, 8)
    layers = image_stack(3, hidden=8)  # 1 + 3·3 = 10 leaves
    plain = Sequential(layers)
    with torch.no_grad():
        plain(x)
    z_bytes = x.numel() * x.element_size()
    for every, stored in ((None, 1), (4, 1 + 2), (1, 1 + 9)):
        block = MemorySavingBlock(copy.deepcopy(layers), anchor_every=every)
        nbytes, _ = _saved_bytes(lambda b=block: b(x))
        assert nbytes == stored * z_bytes, (every, nbytes)
    # with every input kept nothing is reconstructed: float32 gradients as plain autograd's
    block = MemorySavingBlock(copy.deepcopy(layers), anchor_every=1)
    xg = x.clone().requires_grad_(True)
    _assert_same(_grads(plain, xg), _grads(block, xg), atol=1e-6, rtol=1e-6)
    # anchors combined with reconstruction, float64: exact
    plain64 = Sequential(copy.deepcopy(layers)).double()
    block64 = MemorySavingBlock(copy.deepcopy(list(plain64.transforms)), anchor_every=3)
    x64 = x.double().requires_grad_(True)
    _assert_same(_grads(plain64, x64), _grads(block64, x64))
    with pytest.raises(ValueError, match="anchor_every"):
        MemorySavingBlock(copy.deepcopy(layers), anchor_every=0)
