"""Text out of a PDF book, with its page structure used to drop what the page prints around the text.

Extraction is PDFium's (pypdfium2), page by page. Then, because a page knows
where its top and bottom are, which a plain text file does not:

1. Running headers and page numbers: a line in the top two or bottom two lines
   of a page whose shape (digits as `#`, case and spacing ignored) recurs at the
   tops or bottoms of at least 3 pages and a tenth of them is page furniture and
   is dropped (the book's title, its chapter title, `17`, `- 17 -`, `iv`). A line
   that ends a sentence is never dropped: headers do not end with a period, and
   a talk header (`Talk 95.`) at many page tops is structure the parser needs.
2. Line ends are LF; PDFium's mark for a hyphen it joined across a line end
   (U+0002) is given back as the printed hyphen and line break, so the parser's
   hyphenation rule (curation/layout.py) decides from the book's vocabulary
   whether the hyphen was the typesetter's.
3. Pages are joined by one line break: a page break is not a paragraph break.

The result is the text that is stored as the source, the offset where each page
starts in it (so an item records its page), and the PDF's own sha256.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from curation.errors import CurationError

PDF_MAGIC = b"%PDF-"
# How far into a page furniture is looked for, and how common a shape must be to count as furniture.
EDGE_LINES = 2
MIN_PAGES = 3
MIN_SHARE = 0.10


class PdfError(CurationError):
    """A PDF could not be read; the message is one line naming the file."""


@dataclass(frozen=True)
class PdfText:
    """A PDF's extracted text and where its pages start in it."""

    text: str
    page_starts: list[int]  # offset of each page's first character in `text`
    pdf_sha256: str
    n_pages: int
    extractor: str
    dropped: dict[str, int] = field(default_factory=dict)  # furniture dropped: shape -> pages

    @property
    def data(self) -> bytes:
        """The bytes stored as the source: the text, UTF-8."""
        return self.text.encode("utf-8")

    def report(self) -> dict:
        """What the parse report keeps about the extraction."""
        return {
            "format": "pdf",
            "pdf_sha256": self.pdf_sha256,
            "pages": self.n_pages,
            "extractor": self.extractor,
            "page_starts": self.page_starts,
            "dropped_lines": sum(self.dropped.values()),
            "dropped_shapes": dict(Counter(self.dropped).most_common(10)),
        }


def is_pdf(path: Path) -> bool:
    """A .pdf file, or any file that starts as a PDF does."""
    if path.suffix.lower() == ".pdf":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(len(PDF_MAGIC)) == PDF_MAGIC
    except OSError:
        return False


def _shape(line: str) -> str:
    """A line as furniture is recognised: digits and roman page numbers as '#', case and spacing ignored."""
    line = " ".join(line.split()).lower()
    if re.fullmatch(r"[ivxlc]+", line):
        return "#"
    return re.sub(r"\d+", "#", line)


def _is_furniture_candidate(line: str) -> bool:
    """Short, and not the end of a sentence; or a bare page number however it is dressed."""
    stripped = line.strip()
    if re.fullmatch(r"[-–—\s]*\d{1,4}[-–—\s]*|[ivxlc]{1,7}", stripped):
        return True
    return bool(stripped) and len(stripped) <= 90 and len(stripped.split()) <= 12 and not re.search(r"[.?!:;,]$", stripped)


def page_furniture(pages: list[list[str]]) -> set[str]:
    """Shapes of lines that recur at page tops or bottoms (see rule 1)."""
    seen: Counter = Counter()
    for lines in pages:
        content = [line for line in lines if line.strip()]
        edges = {_shape(line) for line in content[:EDGE_LINES] + content[-EDGE_LINES:] if _is_furniture_candidate(line)}
        seen.update(edges)
    needed = max(MIN_PAGES, MIN_SHARE * len(pages))
    return {shape for shape, n in seen.items() if n >= needed}


def pdf_text_from_pages(page_texts: list[str], pdf_sha256: str = "", extractor: str = "") -> PdfText:
    """Join extracted page texts into the source text, dropping each page's furniture (rules 1-3)."""
    pages = [text.replace("\r\n", "\n").replace("\r", "\n").replace("\x02", "-\n").split("\n") for text in page_texts]
    furniture = page_furniture(pages)
    dropped: Counter = Counter()
    parts, starts, offset = [], [], 0
    for lines in pages:
        content_at = [i for i, line in enumerate(lines) if line.strip()]
        edges = set(content_at[:EDGE_LINES] + content_at[-EDGE_LINES:])
        kept = []
        for i, line in enumerate(lines):
            if i in edges and _is_furniture_candidate(line) and _shape(line) in furniture:
                dropped[_shape(line)] += 1
                continue
            kept.append(line.rstrip())
        page = "\n".join(kept).strip("\n")
        starts.append(offset)
        parts.append(page)
        offset += len(page) + 1  # the joining line break
    return PdfText("\n".join(parts) + "\n", starts, pdf_sha256, len(page_texts), extractor, dict(dropped))


def extract_pdf(path: Path, progress: Callable[[int, int], None] | None = None) -> PdfText:
    """The text of the PDF at `path` (see the module docstring); PdfError naming the file if it cannot be read."""
    try:
        import pypdfium2 as pdfium
    except ImportError:  # declared in pyproject.toml; a broken install still gets one clear line
        raise PdfError(f"{path}: reading PDFs needs pypdfium2 (pip install pypdfium2)") from None
    data = Path(path).read_bytes()
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as error:
        raise PdfError(f"{path}: not a readable PDF ({error})") from None
    try:
        texts = []
        for number in range(len(document)):
            page = document[number]
            textpage = page.get_textpage()
            texts.append(textpage.get_text_bounded())
            textpage.close()
            page.close()
            if progress:
                progress(number + 1, len(document))
    finally:
        document.close()
    if not any(t.strip() for t in texts):
        raise PdfError(f"{path}: the PDF has no text layer (a scan?); run OCR on it first")
    version = getattr(getattr(pdfium, "version", None), "PYPDFIUM_INFO", "")
    return pdf_text_from_pages(texts, hashlib.sha256(data).hexdigest(), f"pypdfium2 {version}".strip())
