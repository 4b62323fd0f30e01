"""--only naming no section is a usage error, and the last report is left as it was."""

import pytest
from click.testing import CliRunner

from jaxplain.cli import main


@pytest.mark.parametrize("only", ["", ",", " , "])
def test_only_naming_no_section_is_a_usage_error(only, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("last report")
    result = CliRunner().invoke(main, ["demo", "--quick", "--only", only, "--no-compile-cache",
                                       "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "--only" in result.output and "foundation" in result.output
    assert (out / "index.html").read_text() == "last report"
