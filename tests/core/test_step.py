"""The hand-written training step against autograd and torch.optim.Adam."""

import copy

import pytest
import torch

from mnist_vae.core.model import VAE
from mnist_vae.core.objective import batch_loss
from mnist_vae.core.step import (
    AutogradStep,
    CudaGraphStep,
    ElboStep,
    LayerAdam,
    make_step,
)

ARCHS = [dict(latent_dim=20, encoder_hidden=[400], decoder_hidden=None),       # the 20-d model
         dict(latent_dim=2, encoder_hidden=[40, 15], decoder_hidden=None),     # the 2-d model's shape
         dict(latent_dim=3, encoder_hidden=[12], decoder_hidden=[7, 9])]       # asymmetric decoder


def _model(arch, dtype=torch.float64, device="cpu", seed=0):
    torch.manual_seed(seed)
    return VAE(**arch).to(device=device, dtype=dtype)


def _batch(n, latent, dtype=torch.float64, device="cpu", seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand((n, 784), generator=g) < 0.2).to(dtype)
    eps = torch.randn((n, latent), generator=g, dtype=dtype)
    return x.to(device), eps.to(device)


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_and_every_gradient_match_autograd(arch):
    ref = _model(arch)
    mine = copy.deepcopy(ref)
    x, eps = _batch(9, arch["latent_dim"])
    logits, mu, logvar = ref(x, eps)
    bce, kl = batch_loss(logits, x, mu, logvar)
    (bce + kl).backward()
    step = ElboStep(mine, lr=1e-3)
    step.forward_backward(x, eps)
    assert step.total.item() == pytest.approx((bce + kl).item(), rel=1e-12)
    for (name, p_ref), p_mine in zip(ref.named_parameters(), mine.parameters()):
        torch.testing.assert_close(p_mine.grad, p_ref.grad, rtol=1e-10, atol=1e-12, msg=name)
        assert torch.equal(p_mine, p_ref)  # forward_backward alone does not update


def test_layer_adam_is_bitwise_torch_adam():
    arch = ARCHS[1]
    a = _model(arch, dtype=torch.float32)
    b = copy.deepcopy(a)
    step = ElboStep(a, lr=3e-3)
    for p in b.parameters():
        p.grad = torch.zeros_like(p)
    opt = torch.optim.Adam(b.parameters(), lr=3e-3, fused=True)
    for i in range(4):
        x, eps = _batch(6, arch["latent_dim"], torch.float32, seed=i)
        step.forward_backward(x, eps)
        for ga, pb in zip(a.parameters(), b.parameters()):
            pb.grad.copy_(ga.grad)
        step.adam.begin_step()
        for lin in step.adam.state:
            step.adam.update(lin)
        opt.step()
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.equal(pa, pb)
    assert step.adam.steps.item() == 4


@pytest.mark.parametrize("arch", ARCHS[:2])
def test_training_steps_follow_the_autograd_step(arch):
    """Twelve updates, with a partial last batch, from the same weights: same weights and loss."""
    ref, mine = _model(arch), None
    mine = copy.deepcopy(ref)
    a, b = AutogradStep(ref, lr=1e-3), ElboStep(mine, lr=1e-3)
    x, eps = _batch(12 * 8 - 3, arch["latent_dim"])
    for s in range(0, len(x), 8):
        a.step(x[s:s + 8], eps[s:s + 8])
        b.step(x[s:s + 8], eps[s:s + 8])
    assert b.total.item() == pytest.approx(a.total.item(), rel=1e-10)
    for p_ref, p_mine in zip(ref.parameters(), mine.parameters()):
        torch.testing.assert_close(p_mine, p_ref, rtol=1e-9, atol=1e-11)
    assert sorted(b._buffers) == [5, 8]  # one buffer set per batch size, reused


def test_step_kinds_and_their_errors():
    model = _model(ARCHS[2], dtype=torch.float32)
    assert isinstance(make_step(model, 1e-3, 8), ElboStep)  # 'fused' on the CPU: eager
    assert isinstance(make_step(copy.deepcopy(model), 1e-3, 8, "autograd"), AutogradStep)
    with pytest.raises(ValueError, match="step kind"):
        make_step(model, 1e-3, 8, "fast")
    with pytest.raises(ValueError, match="CUDA"):
        make_step(model, 1e-3, 8, "fused", cuda_graph=True)
    model.decoder.append(torch.nn.Sigmoid())
    with pytest.raises(TypeError, match="Linear and ReLU"):
        ElboStep(model, 1e-3)


def test_layer_adam_state_is_per_layer_with_one_step_count():
    model = _model(ARCHS[0], dtype=torch.float32)
    step = ElboStep(model, 1e-3)
    assert isinstance(step.adam, LayerAdam)
    assert len(step.adam.state) == 4  # encoder, head, two decoder layers
    steps = {id(s) for entry in step.adam.state.values() for s in entry[4]}
    assert steps == {id(step.adam.steps)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (run on the device machine)")
def test_cuda_graph_step_replays_the_eager_step():
    """On a GPU: the captured, replayed step gives the eager step's weights and loss."""
    arch = ARCHS[0]
    eager_model = _model(arch, dtype=torch.float32, device="cuda")
    graph_model = copy.deepcopy(eager_model)
    eager = make_step(eager_model, 1e-3, 128, "fused", cuda_graph=False)
    graph = make_step(graph_model, 1e-3, 128, "fused")
    assert isinstance(graph, CudaGraphStep)
    x, eps = _batch(128 * 20 + 50, arch["latent_dim"], torch.float32, device="cuda")
    for s in range(0, len(x), 128):
        eager.step(x[s:s + 128], eps[s:s + 128])
        graph.step(x[s:s + 128], eps[s:s + 128])
    assert isinstance(graph.graph, torch.cuda.CUDAGraph)  # captured, not fallen back to eager
    assert graph.total.item() == pytest.approx(eager.total.item(), rel=1e-6)
    for p_e, p_g in zip(eager_model.parameters(), graph_model.parameters()):
        torch.testing.assert_close(p_g, p_e, rtol=1e-5, atol=1e-6)


def _scaled_kl(monkeypatch, factor=0.9):
    """objective.py with a weight on the KL term, as an edit to it would be."""
    from mnist_vae.core import objective

    original = objective.kl_divergence
    monkeypatch.setattr(objective, "kl_divergence", lambda mu, logvar: factor * original(mu, logvar))


@pytest.mark.parametrize("arch", ARCHS)
def test_fused_step_check_passes_on_the_objective(arch):
    from mnist_vae.core.step import check_against_autograd

    model = _model(arch, dtype=torch.float32)
    before = copy.deepcopy(model.state_dict())
    x, eps = _batch(16, arch["latent_dim"], torch.float32)
    check_against_autograd(model, x, eps)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched


def test_fused_step_check_catches_an_edited_objective(monkeypatch):
    from mnist_vae.core.step import StepMismatchError, check_against_autograd

    model = _model(ARCHS[0], dtype=torch.float32)
    x, eps = _batch(16, 20, torch.float32)
    _scaled_kl(monkeypatch, 0.9)
    with pytest.raises(StepMismatchError, match="train.step: autograd") as err:
        check_against_autograd(model, x, eps)
    assert "loss" in str(err.value) and "gradient of encoder.0.weight" in str(err.value)
    _scaled_kl(monkeypatch, 1 / 0.9)  # undone: 0.9 * (1 / 0.9) is 1 up to float rounding
    check_against_autograd(model, x, eps)


def _tiny_fit(step):
    import numpy as np
    from conftest import params_with

    from mnist_vae.core.training import fit

    rng = np.random.default_rng(0)
    images = lambda n: (rng.random((n, 784)) < 0.15).astype(np.uint8)  # noqa: E731
    p = params_with({"train.epochs": 1, "train.batch_size": 64, "train.step": step, "train.device": "cpu",
                     "tracking.enabled": False})
    return fit(p.models["vae20d"], p, images(300), images(50), progress=False)


def test_scaled_kl_stops_the_fused_fit_and_trains_with_autograd(monkeypatch):
    """An objective.py edit that step.py does not follow: the fused fit stops on its first batch
    naming the way out; with train.step: autograd the same edit trains."""
    from mnist_vae.core.step import StepMismatchError

    plain = _tiny_fit("fused")["metrics"]
    _scaled_kl(monkeypatch, 0.9)
    with pytest.raises(StepMismatchError, match="Set `train.step: autograd`"):
        _tiny_fit("fused")
    scaled = _tiny_fit("autograd")["metrics"]
    assert scaled["epochs"] == 1
    # the test loss is evaluated with the edited objective too: BCE + 0.9 KL
    assert scaled["test_loss"] == pytest.approx(scaled["test_bce"] + scaled["test_kl"])
    assert scaled["test_loss"] != pytest.approx(plain["test_loss"], rel=1e-4)


def test_universal_adam_flushes_its_moments_by_comparison_on_both_paths(monkeypatch):
    """Universal mode leaves the CPU's flush-to-zero off (x86 and ARM decide tininess at other
    points) and sets each moment below 2^-126 to 0 itself: a gradient of 1e-38 leaves no subnormal
    moment, a gradient of 1e-30 a normal one, on the compiled kernel and on the torch ops alike."""
    from torch import nn

    from mnist_vae.core import exact, numerics
    from mnist_vae.core.step import LayerAdam

    monkeypatch.setitem(numerics._state, "mode", "universal")
    moments = []
    try:
        for on in (True, False):
            exact.use_kernels(on)
            layer = nn.Linear(2, 2)
            adam = LayerAdam([layer], lr=0.01)
            layer.weight.grad = torch.tensor([[1e-38, -1e-38], [1e-30, 0.5]])
            layer.bias.grad = torch.zeros(2)
            adam.state[layer] = (adam.state[layer][0], [layer.weight.grad, layer.bias.grad], *adam.state[layer][2:])
            adam.begin_step()
            with torch.no_grad():
                adam.update(layer)
            m, v = adam.state[layer][2][0], adam.state[layer][3][0]
            moments.append((m.clone(), v.clone()))
    finally:
        exact.use_kernels(True)
    for m, v in moments:
        assert m[0].tolist() == [0.0, 0.0] and m[1, 0].item() == pytest.approx(1e-31, rel=1e-6)  # 0.1 g: normal
        assert v[0].tolist() == [0.0, 0.0] and v[1, 0].item() == 0.0  # 0.001 g^2 underflows: 0, not a subnormal
        assert not ((m != 0) & (m.abs() < 2 ** -126)).any() and not ((v != 0) & (v < 2 ** -126)).any()
    assert all(torch.equal(a, b) for a, b in zip(moments[0], moments[1]))


def test_universal_training_leaves_the_hardware_flush_to_zero_off(monkeypatch):
    from mnist_vae.core import numerics, runtime

    calls = []
    monkeypatch.setattr(runtime.torch, "set_flush_denormal", calls.append)
    for mode in ("universal", "fast"):
        monkeypatch.setitem(numerics._state, "mode", mode)
        runtime.flush_denormals()
    assert calls == [False, True]
