"""Ingestion: Markdown, HTML main text, PDF, FAQ files, metadata, and every kind of bad input with its reason."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from knowledge.chunking import chunk_document
from knowledge.documents import load_folder, scan

HTML = """<html lang="de"><head><title>Rückgabe | Kestrel</title>
<link rel="canonical" href="https://kestrelhome.example/help/returns"></head>
<body><nav><a href="/">Home</a> | <a href="/shop">Shop</a> | Cart | Login</nav>
<main><article><h1>Return policy</h1>
<p>You can return any device within 30 days of delivery for a full refund, as long as it is undamaged.</p>
<h2>How to start a return</h2>
<p>Open the app, go to Orders and tap Return. Print the label and drop the parcel at a post office.</p>
</article></main><footer>Copyright 2026 Kestrel Home. Privacy. Cookies. Terms of sale.</footer></body></html>"""


def text_pdf(pages: list[str], title: str | None = None, password: str | None = None) -> bytes:
    """A real PDF whose pages hold the given lines of text (Helvetica), optionally encrypted."""
    writer = PdfWriter()
    for text in pages:
        page = writer.add_blank_page(612, 792)
        if text:
            font = DictionaryObject(
                {
                    NameObject("/Type"): NameObject("/Font"),
                    NameObject("/Subtype"): NameObject("/Type1"),
                    NameObject("/BaseFont"): NameObject("/Helvetica"),
                }
            )
            fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
            page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
            stream = DecodedStreamObject()
            lines = " ".join(f"({line}) Tj 0 -16 Td" for line in text.split("\n"))
            stream.set_data(f"BT /F1 12 Tf 72 720 Td {lines} ET".encode())
            page[NameObject("/Contents")] = writer._add_object(stream)
    if title:
        writer.add_metadata({"/Title": title})
    if password:
        writer.encrypt(password)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def test_markdown_metadata_title_language_tags_updated_and_link(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "---\nid: reset\ntitle: Reset a password\ncategory: accounts\ntags: [login, password]\n"
        "updated: 2026-01-02\nlanguage: fr\nurl: https://help.example/reset\n---\n# Reset a password\n\nText.\n"
    )
    (tmp_path / "notes.txt").write_text("Plain text without any front matter.")
    docs, skipped = load_folder(tmp_path)
    by_id = {d.id: d for d in docs}
    reset = by_id["reset"]
    assert skipped == [] and reset.title == "Reset a password"
    assert reset.metadata["tags"] == "login,password" and reset.metadata["updated"] == "2026-01-02"
    assert reset.metadata["language"] == "fr" and reset.metadata["url"] == "https://help.example/reset"
    notes = by_id["notes"]
    assert notes.title == "Notes" and notes.metadata["language"] == "en" and notes.metadata["url"] == "notes.txt"
    assert len(notes.metadata["updated"]) == 10  # from the file's modification time


def test_html_keeps_main_text_and_headings_and_drops_navigation(tmp_path: Path) -> None:
    (tmp_path / "returns.html").write_text(HTML)
    docs, _ = load_folder(tmp_path)
    doc = docs[0]
    assert "30 days of delivery" in doc.text and "Copyright" not in doc.text and "Cart | Login" not in doc.text
    assert doc.metadata["language"] == "de" and doc.metadata["url"] == "https://kestrelhome.example/help/returns"
    chunks = chunk_document(doc, size=900, overlap=50)
    assert "How to start a return" in [c.metadata["section"] for c in chunks]


def test_pdf_pages_become_sections_with_the_pdf_title(tmp_path: Path) -> None:
    (tmp_path / "warranty.pdf").write_bytes(
        text_pdf(["Devices carry a two-year warranty.", "Claims need the order number."], title="Warranty terms")
    )
    docs, skipped = load_folder(tmp_path)
    assert skipped == [] and docs[0].title == "Warranty terms"
    chunks = chunk_document(docs[0], size=900, overlap=50)
    assert [c.metadata["section"] for c in chunks] == ["Page 1", "Page 2"]
    assert "two-year warranty" in chunks[0].text


def test_faq_files_give_one_chunk_per_question_with_stable_ids(tmp_path: Path) -> None:
    (tmp_path / "faq.csv").write_text(
        "question,answer,category\nHow long is shipping?,3 to 5 days.,orders\nCan I pay by card?,Yes.,billing\n"
    )
    rows = [{"id": "q1", "question": "Do you ship abroad?", "answer": "To 30 countries.", "language": "en"}]
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs, skipped = load_folder(tmp_path)
    assert skipped == [] and len(docs) == 3
    assert "more/q1" in {d.id for d in docs}
    shipping = next(d for d in docs if d.title == "How long is shipping?")
    assert shipping.metadata["category"] == "orders"
    long_answer = type(shipping)(
        shipping.id, shipping.title, shipping.text + " word" * 500, shipping.source, shipping.metadata, shipping.kind
    )
    assert len(chunk_document(long_answer, size=200, overlap=20)) == 1
    again, _ = load_folder(tmp_path)
    assert sorted(d.id for d in again) == sorted(d.id for d in docs)


def test_bad_inputs_are_skipped_with_a_reason(tmp_path: Path) -> None:
    kb, outside = tmp_path / "kb", tmp_path / "outside"
    kb.mkdir()
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nNot part of the knowledge base.")
    (kb / "good.md").write_text("# Good\n\nUseful text.")
    (kb / "copy.md").write_text("# Good\n\nUseful text.")
    (kb / "empty.md").write_text("")
    (kb / "blank.md").write_text("---\ntitle: Blank\n---\n\n")
    (kb / "big.md").write_text("x" * 3000)
    (kb / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (kb / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage \x00\x01 trailer broken")
    (kb / "locked.pdf").write_bytes(text_pdf(["Top secret"], password="hunter2"))
    (kb / "scan.pdf").write_bytes(text_pdf([""]))
    (kb / "bad.jsonl").write_text('{"question": "no answer"}\n')
    os.symlink(outside / "secret.md", kb / "link.md")
    docs, skipped = load_folder(kb, max_bytes=2000)
    reasons = {s.source: s.reason for s in skipped}
    assert [d.id for d in docs] == ["copy"] or [d.id for d in docs] == ["good"]
    assert reasons["link.md"] == "symlink points outside the source folder"
    assert reasons["empty.md"] == "empty file" and reasons["blank.md"] == "empty document"
    assert reasons["big.md"].startswith("file is over the size limit")
    assert reasons["latin1.txt"].startswith("not UTF-8")
    assert reasons["corrupt.pdf"].startswith(("corrupt PDF", "unreadable PDF"))
    assert reasons["locked.pdf"] == "encrypted PDF (needs a password)"
    assert reasons["scan.pdf"].startswith("PDF has no extractable text")
    assert "needs both a question and an answer" in reasons["bad.jsonl"]
    assert any(r.startswith("duplicate of") for r in reasons.values())


def test_missing_source_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        scan([tmp_path / "nope"], 1000)
