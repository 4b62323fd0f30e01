"""write_report: a well-formed page, its table of contents, figures on disk, escaping."""

import json
import re
import xml.etree.ElementTree as ET

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxplain.report import Section, Table, write_report  # noqa: E402


def _figure(color):
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0], color=color)
    return fig


def _parse(path):
    """The page parsed as XML (it is written as polyglot XHTML, so this checks well-formedness)."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    return ET.fromstring(text.split("\n", 1)[1])


@pytest.fixture
def sections():
    return [
        Section("Accuracy & <script>", text="Line one\nline two\n\nSecond paragraph.")
        .with_table(["split", "accuracy"], [["test", 0.97777], ["train <all>", 1.0]], caption="acc")
        .with_figure(_figure("red"), caption="first"),
        Section("Twice").with_figure(_figure("blue"))
        .with_figure(_figure("green"), caption="third"),
        Section("Twice", text="same title again"),
        Section("Broken (failed)", error="Traceback (most recent call last):\n  ValueError: <bad>"),
    ]


def test_report_is_well_formed_with_toc_figures_and_tables(sections, tmp_path):
    index = write_report(sections, tmp_path / "out", title="Demo <report>")
    assert index == tmp_path / "out" / "index.html"
    root = _parse(index)
    assert root.find("head/title").text == "Demo <report>"
    main = root.find("body/main")
    ids = [s.get("id") for s in main.iter("section")]
    assert len(ids) == 4 and len(set(ids)) == 4
    toc = [a.get("href") for a in main.find("nav").iter("a")]
    assert toc == [f"#{i}" for i in ids]
    assert [a.text for a in main.find("nav").iter("a")] == [s.title for s in sections]

    images = [img.get("src") for img in main.iter("img")]
    assert len(images) == 3
    pngs = [plt.imread(index.parent / src) for src in images]
    assert sorted(p.name for p in (index.parent / "figures").iterdir()) == sorted(
        src.split("/")[1] for src in images)
    # Each figure file holds its own plot: red, blue, green lines respectively.
    for png, channel in zip(pngs, [0, 2, 1]):
        dominant = png[..., :3].reshape(-1, 3)
        colored = dominant[(dominant.max(1) - dominant.min(1)) > 0.3]
        assert colored.size and (colored.argmax(1) == channel).mean() > 0.9
    captions = [c.text for c in main.iter("figcaption")]
    assert captions == ["first", "third"]

    first = next(main.iter("section"))
    cells = [[td.text for td in tr] for tr in first.iter("tr")]
    assert cells == [["split", "accuracy"], ["test", "0.9778"], ["train <all>", "1"]]
    paragraphs = list(first.iter("p"))
    assert len(paragraphs) == 2 and len(paragraphs[0].findall("br")) == 1


def test_failed_section_is_marked_with_its_traceback(sections, tmp_path):
    root = _parse(write_report(sections, tmp_path, title="t"))
    failed = [s for s in root.iter("section") if s.get("class") == "failed"]
    assert len(failed) == 1
    assert "ValueError: <bad>" in failed[0].find("pre").text
    assert "1 failed" in root.find("body/main/header/p").text
    assert sum(1 for span in root.find("body/main/nav").iter("span") if span.text == "failed") == 1


def test_text_is_escaped(sections, tmp_path):
    text = write_report(sections, tmp_path, title="t").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_rewriting_replaces_stale_figures(sections, tmp_path):
    write_report(sections, tmp_path, title="t")
    assert len(list((tmp_path / "figures").iterdir())) == 3
    index = write_report(sections[2:], tmp_path, title="t")
    assert list((tmp_path / "figures").iterdir()) == []
    assert not re.search(r"<img", index.read_text())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_page_is_readable_by_everyone(sections, tmp_path):
    index = write_report(sections, tmp_path, title="t")
    assert index.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644


def test_report_json_holds_the_pages_sections_tables_and_figure_files(sections, tmp_path):
    """report.json says what the page says: titles and anchors, text, failure, each table's
    cells as numbers (non-finite ones as null), and each figure's file (the page's <img>)."""
    odd = Section("Odd cells", items=(Table(("a", "b", "c", "d"),
                                           ((np.float32(0.5), np.int64(3), float("nan"), True),
                                            (float("-inf"), "x", None, np.bool_(False)))),))
    index = write_report([*sections, odd], tmp_path, title="Demo <report>")
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    root = _parse(index)
    page = list(root.iter("section"))
    assert report["title"] == "Demo <report>"
    assert [s["id"] for s in report["sections"]] == [s.get("id") for s in page]
    assert [s["title"] for s in report["sections"]] == [s.title for s in [*sections, odd]]
    assert [s["failed"] for s in report["sections"]] == [False, False, False, True, False]
    assert "ValueError: <bad>" in report["sections"][3]["error"]
    assert report["sections"][0]["text"] == sections[0].text
    table = report["sections"][0]["items"][0]
    assert table == {"type": "table", "header": ["split", "accuracy"],
                     "rows": [["test", 0.97777], ["train <all>", 1.0]], "caption": "acc"}
    assert report["sections"][4]["items"][0]["rows"] == [[0.5, 3, None, True],
                                                         [None, "x", "None", False]]
    files = [i["file"] for s in report["sections"] for i in s["items"] if i["type"] == "figure"]
    assert files == [img.get("src") for img in root.iter("img")]
    captions = [i["caption"] for s in report["sections"] for i in s["items"]
                if i["type"] == "figure"]
    assert captions == ["first", "", "third"]


def test_non_sections_are_refused(tmp_path):
    with pytest.raises(TypeError, match=r"sections\[1\]"):
        write_report([Section("a"), "b"], tmp_path, title="t")


def test_a_long_title_makes_a_short_unique_file_name(tmp_path):
    long = "Attribution of the predicted class for a ResNet-50 on chest X-rays " * 5  # 340 chars
    sections = [Section(long).with_figure(_figure("red")), Section(long + " again")
                .with_figure(_figure("blue"))]
    root = _parse(write_report(sections, tmp_path, title="t"))
    images = [img.get("src") for img in root.iter("img")]
    assert len(set(images)) == 2 and all((tmp_path / src).is_file() for src in images)
    assert max(len(src.split("/")[1]) for src in images) < 80
    ids = [s.get("id") for s in root.iter("section")]
    assert len(set(ids)) == 2


def test_a_failure_part_way_leaves_the_previous_report_whole(sections, tmp_path, monkeypatch):
    import pathlib

    index = write_report(sections, tmp_path, title="first")
    page = index.read_text()
    figures = {p.name: p.read_bytes() for p in (tmp_path / "figures").iterdir()}
    real, calls = pathlib.Path.write_bytes, []

    def full_disk(path, data):  # the second figure does not fit
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_report(sections[::-1], tmp_path, title="second")
    assert index.read_text() == page
    assert {p.name: p.read_bytes() for p in (tmp_path / "figures").iterdir()} == figures
    assert all((tmp_path / src).is_file() for src in re.findall(r'src="([^"]+)"', page))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "index.html", "report.json"]
