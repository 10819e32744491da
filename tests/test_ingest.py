
import pytest
from conftest import SEED, break_html_reader, write

from askdesk.articles.ingest import read_article, read_articles, strip_boilerplate
from askdesk.errors import BadInputError


def test_bundled_article_title_date_and_tail_stripped():
    a = read_article(SEED, root=SEED.parent)
    assert a.title == "Trump and Ishiba Forge Ties Amid Trade Talks and Regional Security Concerns"
    assert a.date == "2025-02-07"
    assert a.path == SEED.name
    assert a.text.startswith("President Donald Trump welcomed Japanese Prime Minister Shigeru Ishiba")
    assert a.text.endswith("address ongoing strategic interests.")
    for junk in ("Tags", "Leave a Reply", "Your email address"):
        assert junk not in a.text


def test_ids_are_content_derived(tmp_path):
    f = write(tmp_path / "a.txt", "Title\n\nBody one.")
    first = read_article(f, root=tmp_path).id
    assert read_article(f, root=tmp_path).id == first
    write(f, "Title\n\nBody two.")
    assert read_article(f, root=tmp_path).id != first


def test_yaml_front_matter(tmp_path):
    f = write(tmp_path / "x.md", "---\ntitle: Harbor reopens\ndate: March 1, 2024\nsource: Harbor Times\n"
                                 "url: https://example.org/h\n---\nThe harbor reopened on Friday.\n")
    a = read_article(f)
    assert (a.title, a.date, a.source, a.url) == ("Harbor reopens", "2024-03-01", "Harbor Times", "https://example.org/h")
    assert a.text == "The harbor reopened on Friday."


def test_header_lines_and_markdown_heading(tmp_path):
    a = read_article(write(tmp_path / "h.txt", "Title: Mill closes\nDate: 2024-05-02\n\nThe mill closed."))
    assert (a.title, a.date, a.text) == ("Mill closes", "2024-05-02", "The mill closed.")
    b = read_article(write(tmp_path / "m.md", "# Port strike ends\nDock workers returned on Monday."))
    assert b.title == "Port strike ends" and b.text == "Dock workers returned on Monday."


def test_html_extracted_with_metadata(tmp_path):
    html = """<html><head><title>Rail deal signed | Daily Ledger</title>
    <meta property="og:title" content="Rail deal signed"><meta name="date" content="2024-06-03">
    <meta property="og:site_name" content="Daily Ledger"></head><body><nav>Home | World | Sport</nav>
    <article><h1>Rail deal signed</h1><p>The two governments signed a rail agreement worth 4 billion euros on Monday,
    ending years of negotiation over the cross-border line.</p><p>Construction is due to start in 2026 and the
    line should open in 2031, officials said at the signing ceremony in the capital.</p></article>
    <footer>Copyright Daily Ledger</footer></body></html>"""
    a = read_article(write(tmp_path / "r.html", html))
    assert a.title == "Rail deal signed"
    assert a.date == "2024-06-03"
    assert "4 billion euros" in a.text and "Copyright" not in a.text and "Home | World" not in a.text


@pytest.mark.parametrize("name,content,reason", [
    ("empty.txt", b"", "no article text"),
    ("blank.md", b"\n\n   \n", "no article text"),
    ("bin.txt", b"\x89PNG\x00\x00\x01", "binary"),
    ("huge.txt", b"word " * 300_000, "limit"),
])
def test_bad_files_are_skipped_with_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    write(tmp_path / "good.txt", "Good\n\nA good article.")
    articles, skipped = read_articles([tmp_path], root=tmp_path, max_bytes=1_000_000)
    assert [a.title for a in articles] == ["Good"]
    assert len(skipped) == 1 and skipped[0].path.endswith(name) and reason in skipped[0].reason


HTML = ("<html><head><title>Varsk harbour reopens</title></head><body><article><h1>Varsk harbour reopens</h1>"
        "<p>The harbour of Varsk reopened on Monday after an 18-month renovation that cost 42 million euros, "
        "the port authority said, and the fleet returned to the inner basin.</p></article></body></html>")


@pytest.mark.parametrize("error,fix", [
    (None, "run `pip install lxml_html_clean`"),  # lxml's own message, as a stock pip 23.2 install gives it
    (ModuleNotFoundError("No module named 'justext'", name="justext"), "installs 'justext'"),
    (AttributeError("module 'lxml' has no attribute 'etree'"), "run `pip install -e .` in askdesk's folder"),
])
def test_a_reader_library_that_fails_to_load_skips_that_file_in_one_line_with_the_fix(tmp_path, monkeypatch,
                                                                                     error, fix):
    write(tmp_path / "a.html", HTML)
    write(tmp_path / "b.txt", "Good\n\nA good article.")
    break_html_reader(monkeypatch, error)
    articles, skipped = read_articles([tmp_path], root=tmp_path)
    assert [a.title for a in articles] == ["Good"]
    (s,) = skipped
    assert s.path == str(tmp_path / "a.html") and "\n" not in s.reason
    assert s.reason.startswith("'a.html' cannot be read: its reader fails to load (") and fix in s.reason


def test_unknown_suffix_ignored_in_folders_and_missing_path_named(tmp_path):
    write(tmp_path / "notes.csv", "a,b")
    write(tmp_path / ".hidden.txt", "Hidden\n\nSecret.")
    write(tmp_path / "ok.txt", "Ok\n\nFine.")
    articles, skipped = read_articles([tmp_path])
    assert [a.title for a in articles] == ["Ok"] and not skipped
    with pytest.raises(BadInputError, match="does not exist"):
        read_articles([tmp_path / "nope"])


def test_boilerplate_only_stripped_at_the_tail():
    text = "Tags are used by the customs office.\n\nBody text goes on here.\n\nShare this:\n\nFacebook\n\nRelated"
    assert strip_boilerplate(text) == "Tags are used by the customs office.\n\nBody text goes on here."
    long_tail = "Intro.\n\nComments\n\n" + "A real paragraph that is long enough to be article text. " * 5
    assert strip_boilerplate(long_tail) == long_tail.strip()


def test_a_corrected_title_or_date_changes_the_id(tmp_path):
    f = write(tmp_path / "a.md", "---\ntitle: Old\ndate: 2024-01-01\n---\nSame body.")
    ids = {read_article(f).id}
    write(f, "---\ntitle: New\ndate: 2024-01-01\n---\nSame body.")
    ids.add(read_article(f).id)
    write(f, "---\ntitle: New\ndate: 2024-01-02\n---\nSame body.")
    ids.add(read_article(f).id)
    assert len(ids) == 3


@pytest.mark.parametrize("opening,hint,expected", [
    ("WASHINGTON, March 3, 2025 (Reuters) - The Senate voted.", None, "2025-03-03"),
    ("LONDON, 3 March 2025 — Ministers met.", None, "2025-03-03"),
    ("NEW YORK, Feb. 7, 2025 (AP) — Stocks rose.", None, "2025-02-07"),
    ("Feb 7, 2021 ... Super Bowl LV will be played in Tampa.", None, "2021-02-07"),
    ("Feb 7 (Reuters) - Japan's prime minister met Trump.", 2025, "2025-02-07"),
    ("Feb 7 (Reuters) - Japan's prime minister met Trump.", None, None),  # no year anywhere: no date
    ("LONDON — Tuesday was a busy day in parliament.", 2025, None),  # a weekday is no date
    ("March 3 was a good day for the port.", 2025, None),  # a sentence, not a dateline
    ("WASHINGTON, Feb 30, 2024 (Reuters) - Nothing.", None, None),
])
def test_dateline_dates(opening, hint, expected):
    from askdesk.articles.ingest import dateline_date

    assert dateline_date(opening, year_hint=hint) == expected


def test_dateline_used_when_no_metadata_and_year_from_url(tmp_path):
    a = read_article(write(tmp_path / "a.txt", "Senate votes\n\nWASHINGTON, March 3, 2025 (Reuters) - The Senate voted."))
    assert a.date == "2025-03-03"
    b = read_article(write(tmp_path / "b.txt", "Title: Summit\nURL: https://news.example/2025/02/07/summit\n\n"
                                               "Feb 7 (Reuters) - Japan's prime minister met Trump."))
    assert b.date == "2025-02-07"
    c = read_article(write(tmp_path / "c.md", "---\ndate: 2025-01-01\n---\nNote\n\nFeb 7, 2021 ... old snippet."))
    assert c.date == "2025-01-01"  # front matter wins over the dateline


def test_html_without_date_metadata_uses_the_dateline(tmp_path):
    html = """<html><head><title>Rail deal signed</title></head><body><article><h1>Rail deal signed</h1>
    <p>BERLIN, June 3, 2024 (Ledger Wire) - The two governments signed a rail agreement worth 4 billion euros,
    ending years of negotiation over the cross-border line between the two capitals.</p>
    <p>Construction is due to start in 2026 and the line should open in 2031, officials said.</p></article></body></html>"""
    a = read_article(write(tmp_path / "r.html", html))
    assert a.date == "2024-06-03"
