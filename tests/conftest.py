"""Shared fixtures: the default digits model, trained once per test session."""

import jax
import pytest

jax.config.update("jax_enable_x64", False)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free the compiled programs of each test module when it ends. XLA:CPU maps memory for
    every executable it keeps; a whole suite's worth of them passes the kernel's limit on a
    process's memory maps (vm.max_map_count, 65530 here), and compiling then segfaults."""
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def jaxplain_home(tmp_path_factory):
    """A fresh cache folder (``JAXPLAIN_HOME``) holding the session's trained default model."""
    return tmp_path_factory.mktemp("jaxplain_home")


@pytest.fixture(scope="session")
def digits_model(jaxplain_home):
    """``(model, variables, f, digits)``: the default DigitsCNN, trained into ``jaxplain_home``."""
    import jaxplain
    from jaxplain import data

    model, variables = data.pretrained(jaxplain_home, progress=False)
    return model, variables, jaxplain.as_function(model, variables), data.load_digits()


@pytest.fixture(scope="session")
def digits_vit(jaxplain_home):
    """``(model, variables, f)``: the embedded DigitsViT, trained into ``jaxplain_home``."""
    import jaxplain
    from jaxplain import data

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
