"""render reads one bool per objective from the device (the dead-objective check), not its
trace, and a repeated call traces nothing for its checks of the images and transforms."""

import jax
import jax.numpy as jnp
import pytest

from jaxplain import visualize as vis
from jaxplain.visualize import _render
from tests._reads import counting
from tests._traces import counting as counting_traces
from tests.visualize._models import tiny_cnn

F = tiny_cnn()
KEY = jax.random.key(0)
KW = dict(key=KEY, shape=(1, 8, 8, 1), steps=20)


def test_the_dead_check_reads_one_bool_per_objective():
    objs = [vis.channel("relu_1", i) for i in range(6)]
    for objective, n, which in ((objs, 6, r"objectives \[0, 4\] of 6"), (objs[0], 1, "the")):
        with pytest.warns(RuntimeWarning, match=which):
            jax.block_until_ready(vis.render(F, objective, **KW))  # compiled
        with pytest.warns(RuntimeWarning, match=which), counting(_render) as reads:
            jax.block_until_ready(vis.render(F, objective, **KW))
        assert reads.sizes == [n]


def test_a_second_call_traces_nothing():
    kw = dict(KW, transforms=(vis.Jitter(1),))
    objs = [vis.channel("relu_1", i) for i in (1, 2)]
    first = vis.render(F, objs, **kw)
    with counting_traces() as n:
        again = jax.block_until_ready(vis.render(F, objs, **kw))
    assert n.traces == 0
    assert bool(jnp.all(first.images == again.images))


def test_an_unhashable_param_is_checked_every_call():
    jax.block_until_ready(vis.render(F, vis.channel("relu_1", 1),
                                     **dict(KW, param=vis.Pixel(colour=jnp.eye(1)))))
    wrong = vis.CodeSpace(lambda z: jnp.zeros((z.shape[0], 4, 4, 1)) + z[:, :1, None, None], (3,))
    for _ in range(2):  # the error is raised again, not cached away
        with pytest.raises(ValueError, match=r"param makes images shaped \(1, 4, 4, 1\)"):
            vis.render(F, vis.channel("relu_1", 1), **dict(KW, param=wrong))
