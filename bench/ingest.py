"""Time the ingest of the full Talks books into a fresh workspace, by the text route and by the PDF route.

Run as: python bench/ingest.py [BOOK.txt ...]

Baselines, named in every ratio printed:
- the goal the foundation issue names, 2 seconds for the whole book's ingest on this machine (2 cores);
- for the PDF route, the text route's parse of the same book (the `.txt` beside it): the PDF route
  is extraction (pages/s) plus the parse of the extracted text, as a ratio to that parse.
Prints pairs per second, parse quality (talks with pairs, turn contamination) and, where the PDF is
there (`pdf/<name>.pdf` beside the book), the PDF route's pages/s, its pairs, its contamination and
its agreement with the text route (the text route's pairs it also finds, matched by text).
Set SATSANG_SHARED to the shared folder when ../shared is not beside the project.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from curation.dialogue import parse_dialogue
from curation.pdf import extract_pdf
from curation.quality import matched_pairs, turn_contamination
from curation.workspace import init_workspace

GOAL_SECONDS = 2.0
SHARED = Path(os.environ.get("SATSANG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BOOKS = SHARED / "data" / "books"
DEFAULT_BOOKS = ["talks-with-sri-ramana-maharshi.txt", "talks-with-sri-ramana-maharshi-vol2.txt"]
REPEATS = 3


def _median_time(run, repeats: int = REPEATS):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench(book: Path) -> None:
    text = book.read_text(encoding="utf-8")
    parse_s, result = _median_time(lambda: parse_dialogue(text, "0" * 64, title=book.stem))

    def ingest_once(path: Path) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            workspace = init_workspace(Path(tmp) / "ws")
            t0 = time.perf_counter()
            workspace.ingest([path], "dialogue")
            return time.perf_counter() - t0

    ingest_s = statistics.median(ingest_once(book) for _ in range(REPEATS))
    pairs = result.report["pairs"]
    dirt = turn_contamination(result.items)
    print(f"{book.name}  ({len(text):,} characters, median of {REPEATS})")
    print(f"  talks: {result.report['sections']}  with pairs: {result.report['sections_with_pairs']}  "
          f"pairs: {pairs}  silences: {result.report['silences']}  convention: {result.convention}")
    print(f"  text parse:  {parse_s:6.3f} s  {pairs / parse_s:9,.0f} pairs/s")
    print(f"  text ingest: {ingest_s:6.3f} s  {pairs / ingest_s:9,.0f} pairs/s  "
          f"= {ingest_s / GOAL_SECONDS:.2f}x the {GOAL_SECONDS:.0f} s goal")
    print(f"  contamination: {dirt.contaminated}/{dirt.turns} turns = {dirt.rate:.3%} {dirt.by_reason}")

    pdf = book.parent / "pdf" / f"{book.stem}.pdf"
    if not pdf.exists():
        print(f"  (no {pdf.name} beside it: PDF route not measured)")
        return
    extract_s, extracted = _median_time(lambda: extract_pdf(pdf))
    pdf_parse_s, from_pdf = _median_time(
        lambda: parse_dialogue(extracted.text, "0" * 64, title=book.stem, page_starts=extracted.page_starts)
    )
    pdf_ingest_s = statistics.median(ingest_once(pdf) for _ in range(REPEATS))
    pdf_dirt = turn_contamination(from_pdf.items)
    agreement = matched_pairs(result.items, from_pdf.items)
    route_s = extract_s + pdf_parse_s
    print(f"  PDF route ({extracted.n_pages} pages, {extracted.extractor}):")
    print(f"    extract: {extract_s:6.3f} s  {extracted.n_pages / extract_s:7,.0f} pages/s  "
          f"({sum(1 for _ in extracted.report()['dropped_shapes'])} furniture shapes, {extracted.report()['dropped_lines']} lines dropped)")
    print(f"    parse:   {pdf_parse_s:6.3f} s  pairs: {from_pdf.report['pairs']}")
    print(f"    extract + parse: {route_s:6.3f} s = {route_s / parse_s:.2f}x the text route's parse ({parse_s:.3f} s); "
          f"{extracted.n_pages / route_s:,.0f} pages/s")
    print(f"    ingest:  {pdf_ingest_s:6.3f} s = {pdf_ingest_s / ingest_s:.2f}x the text route's ingest")
    print(f"    contamination: {pdf_dirt.contaminated}/{pdf_dirt.turns} turns = {pdf_dirt.rate:.3%} {pdf_dirt.by_reason}")
    print(f"    agreement with the text route: {agreement['agreement']:.3f} of its {agreement['reference']} pairs "
          f"({agreement['exact']} word for word, {agreement['close']} the same exchange extracted differently)")


if __name__ == "__main__":
    books = [Path(p) for p in sys.argv[1:]] or [BOOKS / name for name in DEFAULT_BOOKS]
    for path in books:
        if not path.exists():
            sys.exit(f"{path}: not found (the full books live in ../shared/data/books; or set SATSANG_SHARED)")
        bench(path)
