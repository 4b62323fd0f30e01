"""Methods that fold samples, steps, baselines, noisy copies or windows into the batch, on a
batch split over 4 emulated CPU devices: the same attributions as on one device, split like the
input, and each device doing about a quarter of the work (folding item-major made XLA gather
the whole batch: 2.7x to 4x the ideal per-device flops). In a subprocess: the device-count
flag must precede JAX's start, and the other tests keep one device."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxplain import attribution as A

    assert jax.device_count() == 4, jax.devices()
    k = jax.random.split(jax.random.key(0), 6)
    w1 = jax.random.normal(k[0], (3, 3, 1, 8)) * 0.5
    w2 = jax.random.normal(k[1], (3, 3, 8, 16)) * 0.2
    w3 = jax.random.normal(k[2], (4 * 4 * 16, 10)) * 0.1
    conv = lambda v, w: jax.lax.conv_general_dilated(v, w, (1, 1), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def cnn(x):  # begins with a convolution: IG runs the affine stem on two inputs only
        h = jax.nn.relu(conv(x, w1) + 0.1)
        h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
        h = jax.nn.relu(conv(h, w2))
        return h.reshape(h.shape[0], -1) @ w3

    def squashed(x):  # begins with a nonlinearity: no affine stem
        return cnn(jnp.tanh(x))

    x = jax.random.normal(k[3], (8, 8, 8, 1))
    t = jnp.arange(8, dtype=jnp.int32) % 10
    refs = jax.random.normal(k[4], (4, 8, 8, 1))
    methods = {
        "ig (affine stem)": lambda x, t: A.integrated_gradients(cnn, x, t, steps=8),
        "ig (no stem)": lambda x, t: A.integrated_gradients(squashed, x, t, steps=8),
        "ig (chunks)": lambda x, t: A.integrated_gradients(cnn, x, t, steps=8, batch_size=3),
        "gradient_shap": lambda x, t: A.gradient_shap(cnn, x, t, key=k[5], baselines=refs,
                                                      samples=4, stdev=0.1),
        "deeplift_shap": lambda x, t: A.deeplift_shap(cnn, x, t, baselines=refs),
        "occlusion": lambda x, t: A.occlusion(cnn, x, t, window=(2, 2), stride=2),
        "smoothgrad": lambda x, t: A.smoothgrad(cnn, x, t, key=k[5], samples=4),
        "vargrad (chunks)": lambda x, t: A.smoothgrad(cnn, x, t, key=k[5], samples=4,
                                                      kind="vargrad", batch_size=2),
        "shapley_sampling": lambda x, t: A.shapley_sampling(
            cnn, x, t, key=k[5], samples=2, feature_mask=np.arange(64).reshape(8, 8, 1) // 8),
        "kernel_shap": lambda x, t: A.kernel_shap(
            cnn, x, t, key=k[5], samples=16, feature_mask=np.arange(64).reshape(8, 8, 1) // 8),
        "lime (chunks)": lambda x, t: A.lime(cnn, x, t, key=k[5], samples=16, batch_size=6,
                                             feature_mask=np.arange(64).reshape(8, 8, 1) // 8),
        "score_cam (chunks)": lambda x, t: A.score_cam(cnn, x, t, site="relu_1", batch_size=5),
        "feature_ablation": lambda x, t: A.feature_ablation(
            cnn, x, t, feature_mask=np.arange(64).reshape(8, 8, 1) // 8),
    }

    def flops(fn, *args):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    split = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    xs, ts = jax.device_put(x, split), jax.device_put(t, split)
    for name, method in methods.items():
        one, four = method(x, t), method(xs, ts)
        np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-6 * float(jnp.abs(one).max()),
                                   err_msg=name)
        assert four.sharding.is_equivalent_to(split, x.ndim), (name, four.sharding)
        ratio = flops(method, xs, ts) / flops(method, x, t)
        assert ratio < 0.4, (name, ratio)
        print(f"{name}: per-device flops {ratio:.2f} of one device's")
    print("sharded ok")
""")


def test_folded_methods_stay_split_over_the_batch():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu", PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sharded ok" in proc.stdout
