import pytest
import torch

from transrec.models.user_encoders import GRU4Rec, NextItNet, SASRec
from transrec.registry import USER_ENCODERS

NAMES = ["sasrec", "nextitnet", "gru4rec"]
DIM = 8


def make(name: str, max_len: int = 16, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return USER_ENCODERS.create(name, dim=DIM, max_len=max_len, **kw).eval()


def left_pad(real: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad [b, n, d] to [b, length, d] with random garbage (it must be ignored)."""
    b, n, d = real.shape
    x = torch.cat([torch.randn(b, length - n, d), real], dim=1)
    mask = torch.zeros(b, length, dtype=torch.bool)
    mask[:, length - n :] = True
    return x, mask


def test_registry_and_flags():
    assert set(NAMES) <= set(USER_ENCODERS.names())
    enc = USER_ENCODERS.create("sasrec", dim=16, max_len=10)
    assert isinstance(enc, SASRec)
    assert SASRec.causal and NextItNet.causal and GRU4Rec.causal
    assert USER_ENCODERS.create("sasrec", dim=9, max_len=10, num_heads=2).blocks[0].attn.num_heads == 1


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_heavy_padding(name):
    enc = make(name)
    torch.manual_seed(1)
    x = torch.randn(4, 12, DIM)
    lengths = torch.tensor([12, 5, 1, 0])
    mask = torch.arange(12)[None, :] >= 12 - lengths[:, None]
    out = enc(x, mask)
    assert out.shape == (4, 12, DIM)
    assert torch.isfinite(out).all()
    enc.train()
    assert torch.isfinite(enc(x, mask)).all()


@pytest.mark.parametrize("name", NAMES)
def test_causal(name):
    enc = make(name)
    torch.manual_seed(2)
    x, mask = left_pad(torch.randn(2, 9, DIM), 12)
    base = enc(x, mask)
    t = 6
    x2 = x.clone()
    x2[:, t] += torch.randn(2, DIM)
    out = enc(x2, mask)
    torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
    assert (out[:, t] - base[:, t]).abs().max() > 1e-4
    assert (out[:, -1] - base[:, -1]).abs().max() > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_extra_leading_padding_keeps_user_state(name):
    enc = make(name)
    torch.manual_seed(3)
    real = torch.randn(3, 5, DIM)
    a = enc(*left_pad(real, 8))
    b = enc(*left_pad(real, 12))
    torch.testing.assert_close(a[:, -1], b[:, -1], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[:, -5:], b[:, -5:], atol=1e-5, rtol=0)


def test_nextitnet_receptive_field():
    enc = make("nextitnet", max_len=40, dilations=[1, 4], num_repeats=1, kernel_size=3)
    rf = 1 + 2 * (1 + 2 + 4 + 8)  # kernel-1 times the sum of conv dilations, plus the position itself
    assert enc.receptive_field == rf == 31
    torch.manual_seed(4)
    x = torch.randn(2, 40, DIM)
    mask = torch.ones(2, 40, dtype=torch.bool)
    base = enc(x, mask)[:, -1]

    def changed(pos: int) -> float:
        x2 = x.clone()
        x2[:, pos] += 3 * torch.randn(2, DIM)
        return (enc(x2, mask)[:, -1] - base).abs().max().item()

    assert changed(40 - rf) > 1e-5  # oldest position inside the field
    assert changed(40 - rf - 1) == 0.0  # just outside


def test_sasrec_rejects_too_long():
    with pytest.raises(ValueError):
        make("sasrec", max_len=4)(torch.randn(1, 5, DIM), torch.ones(1, 5, dtype=torch.bool))


def test_gru4rec_hidden_projection():
    enc = make("gru4rec", hidden_dim=12, num_layers=2)
    x, mask = left_pad(torch.randn(2, 4, DIM), 7)
    assert enc(x, mask).shape == (2, 7, DIM)


def test_checkpoints_with_pre_refactoring_sasrec_names_still_load(tmp_path):
    """SASRec's attention moved into an `attn` sublayer (a patch site); older files name its tensors
    `blocks.N.qkv` / `blocks.N.proj` and must load to the same model."""
    from safetensors.torch import load_file, save_file

    from transrec.hub import load_model, save_model
    from transrec.models.recommender import SequentialRecommender

    torch.manual_seed(0)
    model = SequentialRecommender(12, user_encoder="sasrec", dim=8, max_len=6,
                                  encoder_args={"num_layers": 2, "num_heads": 2, "dropout": 0.0}).eval()
    save_model(model, tmp_path / "m", [str(i) for i in range(1, 13)])
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    legacy = {k.replace(".attn.", "."): v for k, v in state.items()}
    assert legacy.keys() != state.keys() and "user_encoder.blocks.1.qkv.weight" in legacy
    save_file(legacy, str(weights))
    loaded = load_model(tmp_path / "m")
    items = torch.tensor([[0, 3, 4, 5], [1, 2, 3, 4]])
    torch.testing.assert_close(loaded.hidden_states(items), model.hidden_states(items))
