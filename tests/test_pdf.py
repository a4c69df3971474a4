"""PDF ingest: real PDFs (laid out by tests/pdf_writer.py, read by PDFium), page furniture dropped, pages kept."""

import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pdf_writer import write_pdf  # noqa: E402

from curation.dialogue import parse_dialogue  # noqa: E402
from curation.pdf import extract_pdf, pdf_text_from_pages  # noqa: E402
from curation.quality import matched_pairs, parse_agreement, turn_contamination  # noqa: E402
from curation.sources import IngestError  # noqa: E402
from curation.workspace import init_workspace  # noqa: E402

DATA = Path(__file__).parent / "data"
HEADER = "Conversations at the River"


def book_pages(lines: list[str], per_page: int = 12) -> list[list[str]]:
    """The interview fixture set as a book: lines of a page's width, its title at every page top, the page number at every bottom."""
    body = [wrapped for line in lines if line.strip() for wrapped in textwrap.wrap(line, 80)]
    chunks = [body[i:i + per_page] for i in range(0, len(body), per_page)]
    return [[HEADER, *chunk, str(number)] for number, chunk in enumerate(chunks, start=7)]


@pytest.fixture()
def interview_pdf(tmp_path) -> Path:
    lines = (DATA / "conventions" / "interview.txt").read_text(encoding="utf-8").splitlines()
    return write_pdf(tmp_path / "interview.pdf", book_pages(lines[1:]))  # the title page line is the header


def test_page_furniture_is_dropped_and_pages_are_kept(interview_pdf):
    extracted = extract_pdf(interview_pdf)
    n_pages = extracted.n_pages
    assert n_pages >= 3 and len(extracted.page_starts) == n_pages
    assert HEADER not in extracted.text
    assert not any(line.strip().isdigit() for line in extracted.text.splitlines())
    assert extracted.pdf_sha256 == hashlib.sha256(interview_pdf.read_bytes()).hexdigest()
    assert extracted.report()["dropped_lines"] == 2 * n_pages  # a header and a page number on each page
    for number, start in enumerate(extracted.page_starts[1:], start=1):
        assert extracted.text[start - 1] == "\n"  # one line break between pages, no paragraph break


def test_a_pdf_gives_the_pairs_of_its_text(interview_pdf):
    expected = json.loads((DATA / "conventions" / "interview.expected.json").read_text(encoding="utf-8"))
    extracted = extract_pdf(interview_pdf)
    result = parse_dialogue(extracted.text, "p" * 64, page_starts=extracted.page_starts)
    agreement = parse_agreement(result.items, expected)
    assert agreement["recall"] >= 0.9 and agreement["contamination"] == 0.0, agreement["missed"]
    assert [i["page"] for i in result.items] == sorted(i["page"] for i in result.items)
    assert {i["page"] for i in result.items} <= set(range(1, extracted.n_pages + 1)) and len({i["page"] for i in result.items}) > 1


def test_furniture_needs_to_recur_and_a_sentence_is_never_furniture():
    pages = [["Talk 9.", f"D.: Question {n}? M.: Answer {n}.", "The end of the page."] for n in range(5)]
    text = pdf_text_from_pages(["\n".join(p) for p in pages]).text
    assert text.count("Talk 9.") == 5 and text.count("The end of the page.") == 5
    # PDFium joins a line-end hyphen into U+0002: the printed hyphen and line break are given back.
    assert pdf_text_from_pages(["It is medi\x02tation."]).text == "It is medi-\ntation.\n"


def test_workspace_ingest_of_a_pdf(interview_pdf, tmp_path):
    workspace = init_workspace(tmp_path / "ws")
    report = workspace.ingest([interview_pdf], "dialogue")
    file = report.files[0]
    assert file.status == "ingested" and file.n_items == 7
    stored = (workspace.root / "sources" / f"{file.source_id}.txt").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == file.source_id  # the extracted text is the source
    source = workspace.sources().row(0, named=True)
    parse_report = json.loads(source["parse_report"])
    assert parse_report["extraction"]["pdf_sha256"] == hashlib.sha256(interview_pdf.read_bytes()).hexdigest()
    assert parse_report["extraction"]["pages"] >= 3 and parse_report["pairs"] == 7
    items = workspace.items()
    assert items["page"].is_not_null().all() and items["parse_warning"].to_list() == [""] * 7
    text = workspace.source_text(file.source_id)
    for row in items.iter_rows(named=True):
        assert text[row["question_spans"][0][0]:row["question_spans"][-1][1]].replace("\n", " ").startswith(row["question"][:20])
    assert workspace.ingest([interview_pdf], "dialogue").files[0].status == "already ingested"


def test_a_broken_pdf_is_one_line_naming_the_file(tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis is not a pdf body\n")
    workspace = init_workspace(tmp_path / "ws")
    with pytest.raises(IngestError, match=r"broken\.pdf: not a readable PDF") as caught:
        workspace.ingest([broken], "dialogue")
    assert "\n" not in str(caught.value)
    assert workspace.sources().height == 0


SHARED = Path(os.environ.get("SATSANG_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "books"


@pytest.mark.skipif(not (SHARED / "pdf").exists(), reason="../shared/data is not beside the project (or set SATSANG_SHARED)")
@pytest.mark.parametrize("book", ["talks-with-sri-ramana-maharshi", "talks-with-sri-ramana-maharshi-vol2"])
def test_talks_pdf_finds_the_pairs_of_the_text_route(book):
    extracted = extract_pdf(SHARED / "pdf" / f"{book}.pdf")
    from_pdf = parse_dialogue(extracted.text, "p" * 64, title=book, page_starts=extracted.page_starts)
    from_text = parse_dialogue((SHARED / f"{book}.txt").read_text(encoding="utf-8"), "t" * 64, title=book)
    assert matched_pairs(from_text.items, from_pdf.items)["agreement"] >= 0.95
    assert turn_contamination(from_pdf.items).contaminated <= turn_contamination(from_text.items).contaminated


def test_cli_ingest_and_status_show_the_parse_report(interview_pdf, tmp_path):
    from typer.testing import CliRunner

    from satsang.cli import app

    runner = CliRunner()
    root = str(tmp_path / "ws")
    assert runner.invoke(app, ["init", root]).exit_code == 0
    numbered = DATA / "conventions" / "numbered-paragraphs.txt"
    result = runner.invoke(app, ["ingest", str(interview_pdf), str(numbered), "--kind", "dialogue", "-w", root])
    assert result.exit_code == 0, result.output
    assert "PDF," in result.output and "convention qa_dot" in result.output
    status = runner.invoke(app, ["status", "-w", root])
    assert status.exit_code == 0, status.output
    assert "parse of interview: PDF," in status.output.replace("\n", " ")
