"""Shared fixtures: the default digits models, trained once per test run.

Under pytest-xdist the workers share one folder of the run (the parent of their temporary
folders): the trained models, behind a file lock so that one worker trains and the others load,
and JAX's persistent compilation cache, so that a program one test compiled is not compiled
again by another test or worker. Neither changes what a test computes.
"""

import contextlib
import fcntl
import os

# XLA:CPU compiles with LLVM's optimisations off: most of the suite's time is compiling small
# programs (about 40% less time in all). Values agree with the default level to round-off
# (1e-7 on an IG map of values near 1: the last bit, where LLVM fuses or reorders arithmetic),
# well inside every tolerance here. Set before JAX starts its backend, and inherited by the
# processes the tests start. A level the caller sets in XLA_FLAGS wins.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402 - after XLA_FLAGS
import pytest

jax.config.update("jax_enable_x64", False)


def _run_folder(tmp_path_factory):
    """The folder every process of this test run sees."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    folder = _run_folder(config._tmp_path_factory)
    jax.config.update("jax_compilation_cache_dir", str(folder / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@contextlib.contextmanager
def _exclusive(path):
    """Hold an exclusive lock on the file `path` (created if missing)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free the compiled programs of each test module when it ends. XLA:CPU maps memory for
    every executable it keeps; a whole suite's worth of them passes the kernel's limit on a
    process's memory maps (vm.max_map_count, 65530 here), and compiling then segfaults."""
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def jaxplain_home(tmp_path_factory):
    """A cache folder (``JAXPLAIN_HOME``) of this test run, holding its trained default models."""
    home = _run_folder(tmp_path_factory) / "jaxplain_home"
    home.mkdir(exist_ok=True)
    return home


@pytest.fixture(scope="session")
def digits_model(jaxplain_home):
    """``(model, variables, f, digits)``: the default DigitsCNN, trained into ``jaxplain_home``."""
    import jaxplain
    from jaxplain import data

    with _exclusive(jaxplain_home / "cnn.lock"):
        model, variables = data.pretrained(jaxplain_home, progress=False)
    return model, variables, jaxplain.as_function(model, variables), data.load_digits()


@pytest.fixture(scope="session")
def digits_vit(jaxplain_home):
    """``(model, variables, f)``: the embedded DigitsViT, trained into ``jaxplain_home``."""
    import jaxplain
    from jaxplain import data

    with _exclusive(jaxplain_home / "vit.lock"):
        model, variables = data.pretrained(jaxplain_home, progress=False, architecture="vit")
    return model, variables, jaxplain.as_function(model, variables)


@pytest.fixture
def demo_context(digits_model, jaxplain_home):
    """A quick-mode ``jaxplain.report.DemoContext`` on the session's model (key 0)."""
    from jaxplain import data
    from jaxplain.report import DemoContext

    model, variables, f, digits = digits_model
    return DemoContext(
        model=model,
        variables=variables,
        f=f,
        data=digits,
        key=jax.random.key(0),
        quick=True,
        history=data.checkpoint_info(jaxplain_home).history,
        cache_dir=jaxplain_home,
    )
