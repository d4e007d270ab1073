"""Flow++ with the official data-dependent initialisation (``data_init``): every network
convolution and Norm initialised on the first training batch, once; a loaded or resumed
model is not re-initialised."""

from pathlib import Path

import torch
import yaml

from survae.architectures.flowpp import flowpp
from survae.nn.flowpp import DataInitConv2d, FlowPPNet
from survae.nn.flowpp_context import FlowPPContextNet
from survae.testing import assert_invertible, assert_logdet_matches_autograd
from survae.transforms.base import Sequential
from survae.transforms.bijections.flowpp import ElementwiseActNorm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = dict(hidden_channels=8, num_blocks=1, num_components=3, num_heads=2, dropout=0.0,
             dequant_num_blocks=1, dequant_context_blocks=1, data_shape=(3, 4, 4))  # fmt: skip


def _images(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 4, 4), generator=g).double()


def _convs(model: torch.nn.Module) -> list[DataInitConv2d]:
    return [m for m in model.modules() if isinstance(m, DataInitConv2d)]


def test_every_network_convolution_and_norm_is_initialised_on_the_first_batch():
    torch.manual_seed(0)
    model = flowpp(**SMALL, data_init=True).double()
    convs = _convs(model)
    # main flow and dequantizer networks, the dequantizer's context processor: all of them
    nets = [m for m in model.modules() if isinstance(m, (FlowPPNet, FlowPPContextNet))]
    assert len(nets) == 9 + 4 + 1
    in_nets = [c for n in nets for c in n.modules() if isinstance(c, torch.nn.Conv2d)]
    assert in_nets and all(isinstance(c, DataInitConv2d) for c in in_nets)
    assert len(convs) == len(in_nets)
    assert all(c._needs_data_init for c in convs)
    assert {n.eps for n in model.modules() if isinstance(n, ElementwiseActNorm)} == {1e-8}
    model.train()
    lp = model.log_prob(_images())
    assert torch.isfinite(lp).all()
    assert not any(c._needs_data_init for c in convs)


def test_a_resumed_model_is_not_reinitialised_and_computes_the_same():
    torch.manual_seed(0)
    trained = flowpp(**SMALL, data_init=True).double().train()
    trained.log_prob(_images())  # the data-dependent init
    with torch.no_grad():  # a training step's worth of change
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    torch.manual_seed(1)
    resumed = flowpp(**SMALL, data_init=True).double().train()
    resumed.load_state_dict(state)
    x = _images(4)
    torch.manual_seed(2)
    expected = trained.log_prob(x)
    torch.manual_seed(2)
    got = resumed.log_prob(x)  # training mode, first batch after loading
    assert torch.equal(got, expected)
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, state[k]), k  # nothing re-initialised


def test_without_data_init_the_model_is_survaes_and_the_state_dict_keys_agree():
    torch.manual_seed(0)
    plain = flowpp(**SMALL)
    torch.manual_seed(0)
    official = flowpp(**SMALL, data_init=True)
    assert not _convs(plain)
    assert list(plain.state_dict()) == list(official.state_dict())  # the same parameters


def test_flowpp_config_uses_the_official_initialisation():
    config = yaml.safe_load((CONFIGS / "model" / "flowpp.yaml").read_text())
    assert config["data_init"] is True


def test_main_flow_after_the_official_init_is_invertible_with_exact_logdet():
    torch.manual_seed(0)
    model = flowpp(**SMALL, data_init=True).double()
    main = Sequential(list(model.transforms)[1:])
    u = torch.rand(6, 3, 4, 4, dtype=torch.float64) * 0.98 + 0.01
    main.train()
    main(u)  # the data-dependent init: the couplings are off the identity now
    for train in (True, False):
        main.train(train)
        assert_invertible(main, u[:2], atol=1e-6, rtol=1e-5)
    main.eval()
    assert_logdet_matches_autograd(main, u[:2])
