"""one_site: a method that reads one site takes its name or a glob with one match."""

import pytest

from jaxplain.core._select import one_site

NAMES = ("emb0", "emb1", "dense", "relu")


def test_a_name_or_a_glob_with_one_match_gives_that_site():
    assert one_site(NAMES, "relu") == "relu"
    assert one_site(NAMES, "emb0*") == "emb0"
    assert one_site(NAMES, "d*") == "dense"


def test_a_glob_with_several_matches_lists_them():
    with pytest.raises(ValueError, match=r"'emb\*' matches 2 sites \(emb0, emb1\)"):
        one_site(NAMES, "emb*")


def test_no_match_names_close_sites_and_a_non_string_is_a_type_error():
    with pytest.raises(ValueError, match="Did you mean 'relu'"):
        one_site(NAMES, "rel")
    with pytest.raises(ValueError, match="Unknown site 'conv\\*'"):
        one_site(NAMES, "conv*")
    with pytest.raises(TypeError, match="site must be a site name"):
        one_site(NAMES, 3)
