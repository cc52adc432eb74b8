import torch
from conftest import REPO

from mnist_vae.core.model import VAE, build, checkpoint, load_checkpoint
from mnist_vae.io import params


def test_architectures_of_both_models_and_output_shapes():
    p = params.load(REPO / "params.yaml")
    m20, m2 = build(p.models["vae20d"]), build(p.models["vae2d"])
    # 784-400-(2x20) encoder, 20-400-784 decoder: about 650k parameters, as in the reference
    assert sum(t.numel() for t in m20.parameters()) == 652_824
    assert [l.out_features for l in m2.encoder if isinstance(l, torch.nn.Linear)] == [400, 150]
    assert [l.out_features for l in m2.decoder if isinstance(l, torch.nn.Linear)] == [150, 400, 784]
    x = torch.rand(5, 784)
    for model, d in ((m20, 20), (m2, 2)):
        logits, mu, logvar = model(x, torch.zeros(5, d))
        assert logits.shape == (5, 784) and mu.shape == (5, d) and logvar.shape == (5, d)
        probs = model.decode(mu)
        assert probs.min() >= 0 and probs.max() <= 1
        # eps = 0 decodes the mean
        assert torch.allclose(logits, model.decode_logits(mu))


def test_checkpoint_round_trip(tmp_path):
    from mnist_vae.core.model import save_checkpoint

    model = VAE(3, [8, 4])
    save_checkpoint(tmp_path / "m.safetensors", checkpoint(model))
    again = load_checkpoint(tmp_path / "m.safetensors")
    assert again.config == model.config
    x = torch.rand(2, 784)
    assert torch.equal(again.encode(x)[0], model.encode(x)[0])
