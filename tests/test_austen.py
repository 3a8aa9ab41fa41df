"""kexue.datasets.austen_novels: the R lazy-load reader, the chapter / sentence rules and the fixed split."""

import gzip
import struct
import zlib

import pytest

from kexue.datasets import austen


def test_sentences_keep_titles_and_quotes():
    p = ('"Mr. Knightley is here!" said Emma. She smiled; Mrs. Weston did not. Was it so? '
         "It was at St. James's. (Yes.) And then Dr. Perry came.")
    assert austen.sentences(p) == [
        '"Mr. Knightley is here!" said Emma.', "She smiled; Mrs. Weston did not.", "Was it so?",
        "It was at St. James's.", "(Yes.)", "And then Dr. Perry came."]
    assert austen.sentences("no end mark") == ["no end mark"]
    assert austen.sentences("   ") == []


def test_chapters_drop_front_matter_headings_and_the_end():
    lines = ["EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "", "First _para_", "goes on.",
             "", "Second.", "", "", "Chapter 2", "Third.", "", "VOLUME II", "CHAPTER III.", "Fourth.", "",
             "FINIS", "", "After the end."]
    assert austen.chapters(lines) == [["First para goes on.", "Second."], ["Third."], ["Fourth."]]


def test_split_by_chapter():
    splits = [austen.split_of(k) for k in range(20)]
    assert splits.count("valid") == splits.count("test") == 2 and splits.count("train") == 16
    assert splits[8] == "valid" and splits[9] == "test" and splits[18] == "valid" and splits[19] == "test"


def _rds_bytes(rdata, tmp_path, obj):
    path = tmp_path / "obj.rds"
    rdata.write_rds(path, obj, compression="gzip")
    return path.read_bytes()


def test_read_lazyload_db_on_a_synthetic_database(tmp_path):
    rdata = pytest.importorskip("rdata")
    np = pytest.importorskip("numpy")
    objects = {"emma": np.array(["EMMA", "", "CHAPTER I", "Emma Woodhouse."]), "other": np.array(["x", "y"])}
    blob, index = b"", {}
    for name, value in objects.items():
        raw = gzip.decompress(_rds_bytes(rdata, tmp_path, value))  # a serialisation with its "X\n" header
        entry = struct.pack(">I", len(raw)) + zlib.compress(raw)
        index[name] = np.array([len(blob), len(entry)], dtype=np.int32)
        blob += entry
    (tmp_path / "Rdata.rdb").write_bytes(blob)
    (tmp_path / "Rdata.rdx").write_bytes(_rds_bytes(rdata, tmp_path, {"variables": index,
                                                                      "compressed": np.array([True])}))
    got = austen.read_lazyload_db(tmp_path)
    assert got == {k: [str(s) for s in v] for k, v in objects.items()}
    # a corrupt size header is an error, not a silently short text
    bad = struct.pack(">I", 1) + blob[4:]
    (tmp_path / "Rdata.rdb").write_bytes(bad)
    with pytest.raises(RuntimeError, match="emma"):
        austen.read_lazyload_db(tmp_path)


def test_bad_unit():
    with pytest.raises(ValueError, match="unit"):
        austen.austen_novels(unit="word")


@pytest.fixture(scope="module")
def novels():
    pytest.importorskip("rdata")
    try:
        return austen.austen_novels()
    except RuntimeError as exc:  # pragma: no cover - only without apt / the Debian mirror
        pytest.skip(f"Debian package not reachable: {exc}")


def test_austen_novels_counts_and_split(novels):
    sizes = {k: len(v) for k, v in novels.items()}
    assert sizes == {"train": 25539, "valid": 3156, "test": 2752}
    # Pride and Prejudice opens in chapter 0 (train); no heading or title page survives
    assert novels["train"][0].startswith("The family of Dashwood had long been settled in Sussex.")
    assert any(s.startswith("It is a truth universally acknowledged") for s in novels["train"])
    every = [s for v in novels.values() for s in v]
    assert not any(austen._HEADING.match(s) for s in every)
    assert not any("_" in s for s in every)
    paragraphs = austen.austen_novels(unit="paragraph")
    assert sum(map(len, paragraphs.values())) < sum(sizes.values())
