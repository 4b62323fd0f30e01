"""The attribution section on 1-D and 3-D convolutional models (a user trial's findings): NWC
and NCW (Equinox) sequences and NDHWC volumes get patches of whole positions, the CAM family at
the last spatial site, and figures drawn positions left to right / projected along depth."""

import json

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from click.testing import CliRunner

import jaxplain
from jaxplain.attribution import _demo
from jaxplain.cli import main
from jaxplain.report import _display

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


class Seq(nn.Module):
    """NWC sequences (32, 2) -> 3 classes."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3,), name="c1")(x))
        return nn.Dense(3, name="head")(x.mean(axis=1))


class Vol(nn.Module):
    """NDHWC volumes (8, 8, 8, 1) -> 3 classes."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3, 3, 3), name="c1")(x))
        return nn.Dense(3, name="head")(x.mean(axis=(1, 2, 3)))


class EqxSeq(eqx.Module):
    """NCW sequences (2, 32) -> 3 classes, one example at a time."""

    c1: eqx.nn.Conv1d
    head: eqx.nn.Linear

    def __call__(self, x):
        return self.head(jax.nn.relu(self.c1(x)).mean(axis=1))


def seq():
    model = Seq()
    return model, model.init(jax.random.key(0), jnp.zeros((1, 32, 2)))


def vol():
    model = Vol()
    return model, model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 8, 1)))


def eqx_seq():
    k1, k2 = jax.random.split(jax.random.key(0))
    return EqxSeq(eqx.nn.Conv1d(2, 4, 3, padding=1, key=k1), eqx.nn.Linear(4, 3, key=k2))


#: model factory, one example's shape (as stored), its channel axis
MODELS = {"seq": ((32, 2), 1), "eqx_seq": ((2, 32), 0), "vol": ((8, 8, 8, 1), 3)}


def _function(name):
    made = globals()[name]()
    return jaxplain.as_function(*made) if isinstance(made, tuple) else jaxplain.as_function(made)


@pytest.mark.parametrize("name", list(MODELS))
def test_patches_group_whole_positions(name):
    shape, channels = MODELS[name]
    x = jnp.zeros((2,) + shape)
    assert _demo.channel_axis(_function(name), x) == channels
    window, mask = _demo.patches(shape, channels)
    mask = np.broadcast_to(mask, shape)
    spatial = [d for a, d in enumerate(shape) if a != channels]
    # hand-computed: a sixteenth of the length, a quarter of a volume's side, row-major ids
    expected = {"seq": lambda t: t // 2, "eqx_seq": lambda t: t // 2,
                "vol": lambda d, h, w: d // 2 * 16 + h // 2 * 4 + w // 2}[name]
    assert window == ((2,) if len(spatial) == 1 else (2, 2, 2))
    for position in np.ndindex(*spatial):
        ids = np.moveaxis(mask, channels, -1)[position]
        assert (ids == expected(*position)).all()  # every channel of a position: one group
    # occlusion's window (the channel axis whole) spans exactly one group's extent
    sizes = np.bincount(mask.ravel())
    assert (sizes == np.prod(window) * shape[channels]).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_explain_runs_every_method_and_the_cam_family(name, tmp_path, monkeypatch):
    shape, channels = MODELS[name]
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(6,) + shape).astype(np.float32))
    drawn = {}
    real = _display.map_grid

    def spy(x, maps, labels, **kw):
        drawn.update(x=x, maps=maps)
        return real(x, maps, labels, **kw)

    monkeypatch.setattr(_display, "map_grid", spy)
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["explain", f"tests.report.test_conv_inputs:{name}",
                                       "--data", str(data), "--quick", "--only", "attribution",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    section = json.loads((out / "report.json").read_text())["sections"][0]
    rows = {row[0]: row[1] for row in section["items"][0]["rows"]}
    assert "failed" not in rows.values() and "failed" not in section["text"], rows
    assert any(k.startswith("grad-cam ") for k in rows)
    assert {"grad-cam++", "score-cam", "guided grad-cam"} <= set(rows)
    occlusion = next(k for k in rows if k.startswith("occlusion"))
    shap = next(k for k in rows if k.startswith("kernel shap"))
    assert shap.split()[2] == occlusion.split()[1]  # the same patches
    # drawn channels last: positions (or depth, height, width) first, channels on the last axis
    stored_last = np.moveaxis(np.zeros(shape), channels, -1).shape
    assert drawn["x"].shape[1:] == stored_last
    assert all(m.shape[1:-1] == stored_last[:-1] for m in drawn["maps"].values())


def test_volumes_are_drawn_projected_along_depth():
    v = np.random.default_rng(0).normal(size=(4, 5, 6, 2))
    fig, (ax_in, ax_map) = plt.subplots(1, 2)
    _display.show_input(ax_in, v)
    _display.show_map(ax_map, v)
    assert not ax_in.patches and not ax_map.patches  # images, not bars
    np.testing.assert_allclose(ax_in.get_images()[0].get_array(), v.mean(0).mean(-1))
    np.testing.assert_allclose(ax_map.get_images()[0].get_array(), v.sum((0, 3)))
    assert "projected along depth" in _demo.map_caption(v.shape)
    plt.close(fig)


def test_every_section_gets_channels_first_signals_and_volumes_channels_last():
    """The report moves NCW sequences and NCDHW volumes (not only NCHW images) channels last
    for every section, with the model as a function of the moved inputs."""
    from jaxplain.report._user import ReportData, channels_last

    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    volumes = EqxVol(eqx.nn.Conv3d(2, 3, 3, padding=1, key=k1), eqx.nn.Linear(3, 3, key=k2))
    for model, shape in ((eqx_seq(), (2, 32)), (volumes, (2, 4, 5, 6))):
        f = jaxplain.as_function(model)
        x = np.asarray(jax.random.normal(k3, (5,) + shape))
        g, data, moved = channels_last(f, ReportData(x, np.zeros(5, int), x, np.zeros(5, int)))
        assert moved and data.x_test.shape[1:] == shape[1:] + shape[:1]
        np.testing.assert_allclose(g(data.x_test), f(x), rtol=1e-6)
    f = _function("seq")  # channels last already: as it is
    x = np.zeros((2, 32, 2), np.float32)
    g, data, moved = channels_last(f, ReportData(x, np.zeros(2, int), x, np.zeros(2, int)))
    assert g is f and not moved and data.x_test is x


class EqxVol(eqx.Module):
    """NCDHW volumes (2, 4, 5, 6) -> 3 classes, one example at a time."""

    c1: eqx.nn.Conv3d
    head: eqx.nn.Linear

    def __call__(self, x):
        return self.head(jax.nn.relu(self.c1(x)).mean(axis=(1, 2, 3)))


def test_occlusion_windows_overlap_by_half_on_large_inputs():
    """The report's occlusion steps by half a window: 7x7 windows on a 64x64 image (not 49x49,
    2401 passes), and one position on 8x8 digits, where half a 2x2 window is one position."""
    linear = jax.random.normal(jax.random.key(1), (64 * 64 * 2, 3))
    f = lambda x: x.reshape(len(x), -1) @ linear  # noqa: E731
    x = jax.random.normal(jax.random.key(2), (1, 64, 64, 2))
    methods = _demo._methods(jax.random.key(0), True, x, None, x, channels=2)
    name = next(k for k in methods if k.startswith("occlusion"))
    assert name == "occlusion 16x16 step 8x8"
    got = methods[name](f, x, 1)
    # by hand: a linear model's drop for a window is the sum of w * x inside it; each position
    # takes the mean over the windows covering it
    contribution = (x[0] * linear[:, 1].reshape(64, 64, 2)).sum(-1)
    total, count = np.zeros((64, 64)), np.zeros((64, 64))
    for i in range(0, 49, 8):
        for j in range(0, 49, 8):
            total[i:i + 16, j:j + 16] += float(contribution[i:i + 16, j:j + 16].sum())
            count[i:i + 16, j:j + 16] += 1
    np.testing.assert_allclose(got[0], np.repeat((total / count)[..., None], 2, -1), rtol=2e-4,
                               atol=2e-4)
    digits = _demo._methods(jax.random.key(0), True, x[:, :8, :8], None, x[:, :8, :8], channels=2)
    assert "occlusion 2x2" in digits
