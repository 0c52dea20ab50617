//! Text extraction: turns an uploaded file's bytes into [`Section`]s, runs of
//! text that each carry an exact locator (PDF page, heading path).
//!
//! Conventions shared by every format:
//! - Text is UTF-8 with `\n` line ends and no NUL characters (Postgres
//!   `text` cannot hold them).
//! - A section starts at a heading and runs to the next heading; its text
//!   begins with that heading's own line (Markdown keeps the `#` markup, HTML
//!   and DOCX give the plain heading text) so a chunk reads naturally and
//!   embeds the heading words. A heading with no body under it produces no
//!   section of its own; it still appears in the heading path of the
//!   sections below it.
//! - Sections holding only whitespace are dropped; a document that yields no
//!   text at all is an error ([`ExtractError::NoText`] or, for PDFs,
//!   [`ExtractError::PdfNoText`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use quick_xml::events::{BytesStart, Event};
use scraper::{Html, Node};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// A run of text with its locator. `text` is never blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The text, `\n` line ends, no NUL characters.
    pub text: String,
    /// 1-based page number (PDFs, and plain text split on form feeds).
    pub page: Option<u32>,
    /// Heading path such as `"Methods > Participants"` (Markdown, HTML, DOCX).
    pub heading: Option<String>,
}

/// A document format this crate can extract text from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Pdf,
    PlainText,
    Markdown,
    Html,
    Docx,
    Csv,
    Json,
}

const DOCX_MIME: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

impl Format {
    /// Maps a MIME type (case-insensitive, parameters such as `; charset=utf-8`
    /// ignored) to a format; `None` for types this crate does not handle.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let format = match essence.as_str() {
            "application/pdf" | "application/x-pdf" => Format::Pdf,
            "text/plain" => Format::PlainText,
            "text/markdown" | "text/x-markdown" => Format::Markdown,
            "text/html" | "application/xhtml+xml" => Format::Html,
            DOCX_MIME => Format::Docx,
            "text/csv" | "application/csv" | "text/tab-separated-values" => Format::Csv,
            "application/json" | "text/json" => Format::Json,
            _ => return None,
        };
        Some(format)
    }

    /// The canonical MIME type of the format (accepted by [`Format::from_content_type`]).
    pub fn mime(&self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::PlainText => "text/plain",
            Format::Markdown => "text/markdown",
            Format::Html => "text/html",
            Format::Docx => DOCX_MIME,
            Format::Csv => "text/csv",
            Format::Json => "application/json",
        }
    }

    /// What the format is called in user-facing messages ("a PDF").
    fn describe(self) -> &'static str {
        match self {
            Format::Pdf => "a PDF",
            Format::Docx => "a Word document (DOCX)",
            Format::PlainText => "plain text",
            Format::Markdown => "Markdown",
            Format::Html => "HTML",
            Format::Csv => "CSV",
            Format::Json => "JSON",
        }
    }
}

/// Why a file could not be turned into text. The `Display` text is meant for
/// end users: it is stored as the document's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// The bytes are recognisably another supported format than the declared one.
    #[error("the file is {actual} but was uploaded as {declared}")]
    Mismatch {
        actual: &'static str,
        declared: &'static str,
    },
    /// The bytes are a recognisable binary format this crate does not read.
    #[error("the file is {0}, which is not a supported document type")]
    Unsupported(&'static str),
    /// Declared as text but the bytes look binary.
    #[error("the file is not valid UTF-8, UTF-16 or Latin-1 text")]
    NotText,
    #[error("the PDF could not be read: {0}")]
    Pdf(String),
    #[error("the PDF is password-protected, which is not supported")]
    PdfEncrypted,
    #[error("the PDF has no extractable text (scanned images are not supported)")]
    PdfNoText,
    #[error("the DOCX could not be read: {0}")]
    Docx(String),
    #[error("the DOCX has no word/document.xml")]
    DocxNoDocument,
    #[error("the DOCX is too large once decompressed (over {0} MB of XML)")]
    DocxTooLarge(u64),
    #[error("the CSV could not be read: {0}")]
    Csv(String),
    #[error("the JSON is invalid: {0}")]
    Json(String),
    /// The document parsed but holds no text.
    #[error("the document contains no text")]
    NoText,
    #[error("the PDF's forms draw themselves or nest more than {0} levels deep")]
    PdfFormsNested(usize),
    #[error("the PDF's forms make more than {0} drawings of forms")]
    PdfTooManyForms(u64),
    #[error("the HTML nests elements more than {0} levels deep")]
    HtmlTooDeep(usize),
    #[error("the HTML has an element with more than {0} attributes")]
    HtmlTooManyAttributes(usize),
    #[error("the CSV has more than {0} columns")]
    CsvTooWide(usize),
}

/// Largest decompressed XML part read from a DOCX (zip-bomb guard). Real
/// documents' XML is a few MB; their size is in images, which are not read.
const DOCX_XML_LIMIT: u64 = 64 * 1024 * 1024;

/// Detects what the bytes really are, where that is detectable.
///
/// `Ok(Some(Pdf))` for `%PDF-` magic, `Ok(Some(Docx))` for a ZIP holding
/// `word/document.xml`, `Ok(None)` for anything text-like (cannot tell), and
/// `Err(ExtractError::Unsupported(..))` for a recognised binary that is not a
/// supported document (images, other ZIPs such as XLSX, legacy .doc, ...).
pub fn sniff(bytes: &[u8]) -> Result<Option<Format>, ExtractError> {
    let trimmed = trim_ascii_start(bytes);
    if trimmed.starts_with(b"%PDF-") {
        return Ok(Some(Format::Pdf));
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return zip_kind(bytes).map(Some);
    }
    match binary_magic(bytes) {
        Some(kind) => Err(ExtractError::Unsupported(kind)),
        None => Ok(None),
    }
}

/// Refuses bytes whose sniffed type contradicts `declared` (e.g. a PDF
/// uploaded as `text/plain`, a PNG uploaded as anything). [`extract`] calls it.
pub fn check_declared(bytes: &[u8], declared: Format) -> Result<(), ExtractError> {
    match sniff(bytes)? {
        Some(actual) if actual != declared => Err(ExtractError::Mismatch {
            actual: actual.describe(),
            declared: declared.mime(),
        }),
        _ => Ok(()),
    }
}

/// Extracts the text of `bytes` as `format`, in document order.
///
/// Checks the bytes against the declared format first ([`check_declared`]).
/// On success the result is non-empty and no section is blank. Never panics
/// on malformed input (a panic inside the PDF reader becomes an error).
pub fn extract(bytes: &[u8], format: Format) -> Result<Vec<Section>, ExtractError> {
    check_declared(bytes, format)?;
    let sections = match format {
        Format::Pdf => extract_pdf(bytes)?,
        Format::Docx => extract_docx(bytes)?,
        Format::PlainText => plain_text_sections(&decode_text(bytes)?),
        Format::Markdown => markdown_sections(&decode_text(bytes)?),
        Format::Html => {
            let text = decode_text(bytes)?;
            check_html_shape(&text)?;
            html_sections(&text)
        }
        Format::Csv => csv_sections(&decode_text(bytes)?)?,
        Format::Json => json_sections(&decode_text(bytes)?)?,
    };
    // Escapes (JSON `\u0000`, XML `&#0;`) can still produce NULs, which
    // Postgres text cannot hold.
    let sections: Vec<Section> = sections
        .into_iter()
        .map(drop_nuls)
        .filter(|s| !s.text.trim().is_empty())
        .collect();
    if sections.is_empty() {
        return Err(match format {
            Format::Pdf => ExtractError::PdfNoText,
            _ => ExtractError::NoText,
        });
    }
    Ok(sections)
}

fn drop_nuls(mut section: Section) -> Section {
    if section.text.contains('\0') {
        section.text.retain(|c| c != '\0');
    }
    if let Some(heading) = section.heading.as_mut().filter(|h| h.contains('\0')) {
        heading.retain(|c| c != '\0');
    }
    section
}

// ---------------------------------------------------------------------------
// Sniffing helpers
// ---------------------------------------------------------------------------

fn trim_ascii_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Classifies a ZIP: DOCX, or an error naming what it is instead.
fn zip_kind(bytes: &[u8]) -> Result<Format, ExtractError> {
    let archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|_| ExtractError::Unsupported("a damaged or unreadable ZIP archive"))?;
    let has = |name: &str| archive.index_for_name(name).is_some();
    if has("word/document.xml") {
        Ok(Format::Docx)
    } else if has("xl/workbook.xml") {
        Err(ExtractError::Unsupported("an Excel workbook (XLSX)"))
    } else if has("ppt/presentation.xml") {
        Err(ExtractError::Unsupported(
            "a PowerPoint presentation (PPTX)",
        ))
    } else if has("META-INF/container.xml") {
        Err(ExtractError::Unsupported("an EPUB e-book"))
    } else if has("content.xml") && has("mimetype") {
        Err(ExtractError::Unsupported(
            "an OpenDocument file (ODT/ODS/ODP)",
        ))
    } else if has("[Content_Types].xml") {
        Err(ExtractError::Unsupported(
            "an Office file without word/document.xml",
        ))
    } else {
        Err(ExtractError::Unsupported("a ZIP archive"))
    }
}

/// Names well-known binary formats by their magic bytes.
fn binary_magic(b: &[u8]) -> Option<&'static str> {
    const TABLE: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"7z\xBC\xAF\x27\x1C", "a 7-Zip archive"),
        (b"Rar!\x1A\x07", "a RAR archive"),
        (b"\xFD7zXZ\x00", "an xz archive"),
        (b"\x28\xB5\x2F\xFD", "a zstd archive"),
        (
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
            "a legacy Microsoft Office file (.doc, .xls or .ppt)",
        ),
        (b"\x7FELF", "an executable program"),
        (b"\xCA\xFE\xBA\xBE", "an executable program"),
        (b"\x00asm", "a WebAssembly module"),
        (b"SQLite format 3\x00", "an SQLite database"),
        (b"OggS", "an Ogg media file"),
        (b"fLaC", "a FLAC audio file"),
        (b"\x1A\x45\xDF\xA3", "a Matroska/WebM video"),
        (b"{\\rtf", "an RTF document"),
        (b"%!PS", "a PostScript document"),
    ];
    if let Some((_, kind)) = TABLE.iter().find(|(magic, _)| b.starts_with(magic)) {
        return Some(kind);
    }
    if b.len() >= 12 && b.starts_with(b"RIFF") {
        return Some(match &b[8..12] {
            b"WEBP" => "a WebP image",
            b"WAVE" => "a WAV audio file",
            b"AVI " => "an AVI video",
            _ => "a RIFF media file",
        });
    }
    if b.len() >= 12 && &b[4..8] == b"ftyp" {
        return Some("a media file (MP4, MOV or HEIC)");
    }
    if b.len() >= 5 && b.starts_with(b"ID3") && b[3] < 5 && b[4] == 0 {
        return Some("an MP3 audio file");
    }
    if b.len() >= 4 && b.starts_with(b"BZh") && (b'1'..=b'9').contains(&b[3]) {
        return Some("a bzip2 archive");
    }
    None
}

// ---------------------------------------------------------------------------
// Text decoding
// ---------------------------------------------------------------------------

/// Decodes text bytes: UTF-8 (BOM stripped), UTF-16 LE/BE (BOM, or the
/// unmistakable every-other-byte-NUL pattern), else Windows-1252 (a superset
/// of printable Latin-1). Then normalises line ends and drops NULs.
fn decode_text(bytes: &[u8]) -> Result<String, ExtractError> {
    let text = if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        String::from_utf8_lossy(rest).into_owned()
    } else if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        encoding_rs::UTF_16LE
            .decode_without_bom_handling(rest)
            .0
            .into_owned()
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        encoding_rs::UTF_16BE
            .decode_without_bom_handling(rest)
            .0
            .into_owned()
    } else if let Some(encoding) = bomless_utf16(bytes) {
        encoding.decode_without_bom_handling(bytes).0.into_owned()
    } else if looks_binary(bytes) {
        return Err(ExtractError::NotText);
    } else {
        match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            // Cut off in the middle of a multi-byte character: still UTF-8.
            Err(e) if e.error_len().is_none() => String::from_utf8_lossy(bytes).into_owned(),
            Err(_) => encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
                .into_owned(),
        }
    };
    Ok(normalize_text(text))
}

/// UTF-16 without a BOM: ASCII-heavy UTF-16 has a NUL in every other byte.
fn bomless_utf16(bytes: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let sample = &bytes[..bytes.len().min(4096) & !1];
    let pairs = sample.len() / 2;
    if pairs < 2 {
        return None;
    }
    let (mut even_nul, mut odd_nul) = (0usize, 0usize);
    for pair in sample.chunks_exact(2) {
        even_nul += usize::from(pair[0] == 0);
        odd_nul += usize::from(pair[1] == 0);
    }
    if odd_nul * 10 >= pairs * 4 && even_nul * 20 <= pairs {
        Some(encoding_rs::UTF_16LE)
    } else if even_nul * 10 >= pairs * 4 && odd_nul * 20 <= pairs {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    }
}

/// More than 10% control bytes (other than tab, LF, VT, FF, CR, ESC) in the
/// first 8 KiB: not text.
fn looks_binary(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(8192)];
    let control = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | 0x1B))
        .count();
    control * 10 > sample.len()
}

/// CRLF and lone CR become LF; NUL characters are dropped.
fn normalize_text(text: String) -> String {
    if !text.bytes().any(|b| b == b'\r' || b == 0) {
        return text;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' => {
                out.push(b'\n');
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            0 => {}
            b => out.push(b),
        }
        i += 1;
    }
    // Only ASCII bytes were replaced or removed, so this is still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

// ---------------------------------------------------------------------------
// Section building with heading paths
// ---------------------------------------------------------------------------

/// Longest text accepted as a heading.
const MAX_HEADING_BYTES: usize = 1000;
/// Longest title kept in a heading path.
const MAX_TITLE_CHARS: usize = 200;

/// Accumulates lines into sections, opening a new section at each heading.
#[derive(Default)]
struct SectionBuilder {
    out: Vec<Section>,
    /// Sections made of a heading and nothing else; used only if the
    /// document has nothing better.
    heading_only: Vec<Section>,
    text: String,
    heading: Option<String>,
    page: Option<u32>,
    body_lines: usize,
    stack: Vec<(u8, String)>,
}

impl SectionBuilder {
    /// Starts a section under a heading of `level` (smaller is outer). A
    /// "heading" longer than [`MAX_HEADING_BYTES`] is treated as body text
    /// (a mis-styled paragraph or an unclosed tag); titles in the path are
    /// cut to [`MAX_TITLE_CHARS`].
    fn heading(&mut self, level: u8, title: &str, line: &str) {
        if title.len() > MAX_HEADING_BYTES {
            self.line(line);
            return;
        }
        self.flush();
        while self.stack.last().is_some_and(|(l, _)| *l >= level) {
            self.stack.pop();
        }
        let title = match title.char_indices().nth(MAX_TITLE_CHARS) {
            Some((cut, _)) => format!("{}…", title[..cut].trim_end()),
            None => title.to_owned(),
        };
        self.stack.push((level, title));
        let mut path = String::new();
        for (i, (_, t)) in self.stack.iter().enumerate() {
            if i > 0 {
                path.push_str(" > ");
            }
            path.push_str(t);
        }
        self.heading = Some(path);
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        if !line.trim().is_empty() {
            self.body_lines += 1;
        }
    }

    /// Ensures a paragraph break (an empty line) before the next line; a
    /// no-op before the section has body text.
    fn blank(&mut self) {
        if self.body_lines > 0 && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }

    /// Removes and returns the last body line (for Markdown setext headings).
    fn pop_last_line(&mut self) -> Option<String> {
        let body = self.text.strip_suffix('\n')?;
        let start = body.rfind('\n').map_or(0, |i| i + 1);
        let line = body[start..].to_owned();
        self.text.truncate(start);
        if !line.trim().is_empty() {
            self.body_lines = self.body_lines.saturating_sub(1);
        }
        Some(line)
    }

    fn flush(&mut self) {
        let text = self.text.trim_start_matches('\n').trim_end();
        if !text.trim().is_empty() {
            let section = Section {
                text: text.to_owned(),
                page: self.page,
                heading: self.heading.clone(),
            };
            if self.body_lines > 0 {
                self.out.push(section);
            } else {
                self.heading_only.push(section);
            }
        }
        self.text.clear();
        self.body_lines = 0;
    }

    fn finish(mut self) -> Vec<Section> {
        self.flush();
        if self.out.is_empty() {
            self.heading_only
        } else {
            self.out
        }
    }
}

// ---------------------------------------------------------------------------
// Plain text
// ---------------------------------------------------------------------------

/// One section; if the text has form feeds (as `pdftotext` writes between
/// pages) each form-feed-separated part is a numbered page.
fn plain_text_sections(text: &str) -> Vec<Section> {
    if !text.contains('\x0c') {
        return vec![Section {
            text: text.trim().to_owned(),
            page: None,
            heading: None,
        }];
    }
    text.split('\x0c')
        .zip(1u32..)
        .map(|(page, n)| Section {
            text: page.trim().to_owned(),
            page: Some(n),
            heading: None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------

/// Splits at ATX (`#`..`######`) and setext (`===`/`---` under a one-line
/// paragraph) headings; heading lines stay in the section text. Lines inside
/// fenced code blocks (``` or ~~~) are never headings.
fn markdown_sections(text: &str) -> Vec<Section> {
    let mut b = SectionBuilder::default();
    let mut fence: Option<(u8, usize)> = None;
    // Whether the previous line is a one-line paragraph (setext candidate).
    let mut prev_single_para = false;
    let mut prev_blank = true;
    for line in text.split('\n') {
        if let Some((ch, len)) = fence {
            b.line(line);
            if is_fence_close(line, ch, len) {
                fence = None;
            }
            prev_single_para = false;
            prev_blank = false;
            continue;
        }
        if let Some(open) = fence_open(line) {
            fence = Some(open);
            b.line(line);
            prev_single_para = false;
            prev_blank = false;
            continue;
        }
        if let Some((level, title)) = atx_heading(line) {
            b.heading(level, &title, line);
            prev_single_para = false;
            prev_blank = false;
            continue;
        }
        if prev_single_para && let Some(level) = setext_underline(line) {
            let title_line = b.pop_last_line().unwrap_or_default();
            let title = clean_inline(title_line.trim());
            if !title.is_empty() {
                b.heading(level, &title, &format!("{title_line}\n{line}"));
                prev_single_para = false;
                prev_blank = false;
                continue;
            }
            b.line(&title_line);
        }
        let blank = line.trim().is_empty();
        prev_single_para = !blank && prev_blank && is_paragraph_text(line);
        prev_blank = blank;
        b.line(line);
    }
    b.finish()
}

/// `(fence char, fence length)` if the line opens a fenced code block.
fn fence_open(line: &str) -> Option<(u8, usize)> {
    let t = line.trim_start();
    let ch = *t.as_bytes().first()?;
    if ch != b'`' && ch != b'~' {
        return None;
    }
    let len = t.bytes().take_while(|&b| b == ch).count();
    if len < 3 || (ch == b'`' && t[len..].contains('`')) {
        return None;
    }
    Some((ch, len))
}

fn is_fence_close(line: &str, ch: u8, len: usize) -> bool {
    let t = line.trim();
    t.len() >= len && t.bytes().all(|b| b == ch)
}

/// `(level, cleaned title)` for an ATX heading line.
fn atx_heading(line: &str) -> Option<(u8, String)> {
    let indent = line.bytes().take_while(|&b| b == b' ').count();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &rest[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let mut title = rest.trim();
    // Optional closing sequence: "## Title ##".
    let without_closing = title.trim_end_matches('#');
    if without_closing.is_empty() {
        title = "";
    } else if without_closing.ends_with([' ', '\t']) {
        title = without_closing.trim_end();
    }
    let title = clean_inline(title);
    if title.is_empty() {
        return None;
    }
    Some((level as u8, title))
}

/// Level 1 for `===`, 2 for `---` (at least two characters).
fn setext_underline(line: &str) -> Option<u8> {
    let indent = line.bytes().take_while(|&b| b == b' ').count();
    if indent > 3 {
        return None;
    }
    let t = line.trim();
    if t.len() < 2 {
        return None;
    }
    if t.bytes().all(|b| b == b'=') {
        Some(1)
    } else if t.bytes().all(|b| b == b'-') {
        Some(2)
    } else {
        None
    }
}

/// A line that can be a setext heading's text (not a list item, quote, table
/// row, HTML block or indented code).
fn is_paragraph_text(line: &str) -> bool {
    if line.starts_with("    ") || line.starts_with('\t') {
        return false;
    }
    let t = line.trim_start();
    let list_marker = t.starts_with("- ") || t.starts_with("* ") || t.starts_with("+ ") || {
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && (t[digits..].starts_with(". ") || t[digits..].starts_with(") "))
    };
    !(list_marker || t.starts_with('>') || t.starts_with('|') || t.starts_with('<'))
}

/// Strips the commonest inline markup from a heading title.
fn clean_inline(title: &str) -> String {
    title.replace("**", "").replace('`', "").trim().to_owned()
}

// ---------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------

/// Elements whose content is never document text.
const HTML_SKIP: &[&str] = &[
    "head", "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas",
    "select",
];
/// Elements that end a paragraph (an empty line follows them).
const HTML_PARAGRAPH: &[&str] = &[
    "p",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "hr",
    "figure",
    "main",
    "aside",
    "nav",
    "details",
    "form",
];
/// Elements that end a line.
const HTML_LINE: &[&str] = &[
    "div",
    "li",
    "dt",
    "dd",
    "tr",
    "caption",
    "figcaption",
    "address",
    "fieldset",
    "legend",
    "summary",
    "center",
    "thead",
    "tbody",
    "tfoot",
    "option",
    "body",
    "html",
];

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// Deepest element nesting read from HTML; browsers' parsers stop
/// nesting at 512 too. html5ever's tree building slows with the square of
/// the depth (10^5 levels took 25 s).
const HTML_MAX_DEPTH: usize = 512;
/// Most attributes on one element (html5ever checks each new attribute
/// against the element's others).
const HTML_MAX_ATTRIBUTES: usize = 1000;

/// Elements that never have content (no end tag).
const HTML_VOID: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img", "input",
    "keygen", "link", "meta", "param", "source", "track", "wbr",
];
/// Elements whose end tag may be left out: the parser closes them, so
/// they do not nest without end.
const HTML_OPTIONAL_END: &[&str] = &[
    "body", "caption", "colgroup", "dd", "dt", "head", "html", "li", "optgroup", "option", "p",
    "rp", "rt", "tbody", "td", "tfoot", "th", "thead", "tr",
];
/// Elements whose content is text up to their end tag.
const HTML_RAW_TEXT: &[&str] = &[
    "iframe",
    "noembed",
    "noframes",
    "plaintext",
    "script",
    "style",
    "textarea",
    "title",
    "xmp",
];

/// Refuses HTML nested deeper than [`HTML_MAX_DEPTH`] or with an element
/// of more than [`HTML_MAX_ATTRIBUTES`] attributes, in one linear pass
/// over its tags before html5ever builds a tree of it. The depth counts
/// elements opened and not yet closed, the way the parser nests them
/// (void and optional-end elements aside), so it errs low, never high,
/// for pages whose tags are closed.
fn check_html_shape(text: &str) -> Result<(), ExtractError> {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0usize, 0usize);
    let find = |from: usize, what: &[u8]| -> usize {
        b[from.min(b.len())..]
            .windows(what.len())
            .position(|w| w.eq_ignore_ascii_case(what))
            .map_or(b.len(), |p| from + p + what.len())
    };
    while let Some(at) = b[i..].iter().position(|&c| c == b'<') {
        i += at + 1;
        if b[i..].starts_with(b"!--") {
            i = find(i + 3, b"-->");
            continue;
        }
        if matches!(b.get(i), Some(b'!' | b'?')) {
            i = find(i, b">");
            continue;
        }
        let closing = b.get(i) == Some(&b'/');
        if closing {
            i += 1;
        }
        let name_len = b[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b':')
            .count();
        if name_len == 0 || !b[i].is_ascii_alphabetic() {
            continue;
        }
        let name = text[i..i + name_len].to_ascii_lowercase();
        i += name_len;
        // Attributes up to the tag's end, quotes honoured.
        let (mut attributes, mut quote, mut in_word, mut last) = (0usize, None, false, 0u8);
        while let Some(&c) = b.get(i) {
            i += 1;
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if c == b'>' => break,
                None if c.is_ascii_whitespace() => in_word = false,
                None => {
                    if !in_word && c != b'/' && c != b'=' && last.is_ascii_whitespace() {
                        attributes += 1;
                        if attributes > HTML_MAX_ATTRIBUTES {
                            return Err(ExtractError::HtmlTooManyAttributes(HTML_MAX_ATTRIBUTES));
                        }
                    }
                    in_word = true;
                }
            }
            if !c.is_ascii_whitespace() || quote.is_none() {
                last = c;
            }
        }
        let nests = !HTML_VOID.contains(&name.as_str())
            && !HTML_OPTIONAL_END.contains(&name.as_str())
            && last != b'/';
        if closing {
            if nests {
                depth = depth.saturating_sub(1);
            }
        } else if HTML_RAW_TEXT.contains(&name.as_str()) {
            i = find(i, format!("</{name}").as_bytes());
        } else if nests {
            depth += 1;
            if depth > HTML_MAX_DEPTH {
                return Err(ExtractError::HtmlTooDeep(HTML_MAX_DEPTH));
            }
        }
    }
    Ok(())
}

/// Walks the html5ever tree: drops `<head>` (title included), scripts,
/// styles and other non-text elements and anything with a `hidden`
/// attribute; h1–h6 give heading paths; block elements and `<br>` end lines;
/// a table row is one line with cells joined by `" | "` (blocks inside a cell
/// become spaces); whitespace is collapsed except in `<pre>`.
fn html_sections(text: &str) -> Vec<Section> {
    let doc = Html::parse_document(text);
    let mut w = HtmlWriter::default();
    let mut skip = None;
    for edge in doc.tree.root().traverse() {
        match edge {
            ego_tree::iter::Edge::Open(node) => {
                if skip.is_some() {
                    continue;
                }
                match node.value() {
                    Node::Text(t) => w.text(t),
                    Node::Element(el) => {
                        let name = el.name();
                        if HTML_SKIP.contains(&name) || el.attr("hidden").is_some() {
                            skip = Some(node.id());
                        } else {
                            w.open(name);
                        }
                    }
                    _ => {}
                }
            }
            ego_tree::iter::Edge::Close(node) => {
                if let Some(id) = skip {
                    if id == node.id() {
                        skip = None;
                    }
                    continue;
                }
                if let Node::Element(el) = node.value() {
                    w.close(el.name());
                }
            }
        }
    }
    w.end_line();
    w.b.finish()
}

#[derive(Default)]
struct HtmlWriter {
    b: SectionBuilder,
    line: String,
    pending_space: bool,
    pre: usize,
    heading: Option<(u8, String)>,
    cell_in_row: bool,
    /// Depth of open table cells: inside one, block elements and headings
    /// are just spaces, so a row stays on one line.
    cells: usize,
}

fn html_breaks_line(name: &str) -> bool {
    name == "br"
        || name == "pre"
        || name == "tr"
        || heading_level(name).is_some()
        || HTML_LINE.contains(&name)
        || HTML_PARAGRAPH.contains(&name)
}

impl HtmlWriter {
    fn text(&mut self, t: &str) {
        if let Some((_, buf)) = &mut self.heading {
            let mut pending = buf.ends_with(' ');
            push_collapsed(buf, &mut pending, t);
            if pending {
                buf.push(' ');
            }
        } else if self.pre > 0 {
            let mut parts = t.split('\n');
            if let Some(first) = parts.next() {
                self.line.push_str(first);
            }
            for part in parts {
                self.end_pre_line();
                self.line.push_str(part);
            }
        } else {
            push_collapsed(&mut self.line, &mut self.pending_space, t);
        }
    }

    fn open(&mut self, name: &str) {
        if let Some((_, buf)) = &mut self.heading {
            if html_breaks_line(name) {
                buf.push(' ');
            }
            return;
        }
        if name == "td" || name == "th" {
            if self.cell_in_row {
                self.line.push_str(" | ");
                self.pending_space = false;
            }
            self.cell_in_row = true;
            self.cells += 1;
            return;
        }
        if self.cells > 0 {
            if html_breaks_line(name) {
                self.pending_space = true;
            }
            return;
        }
        if let Some(level) = heading_level(name) {
            self.end_line();
            self.heading = Some((level, String::new()));
        } else if name == "br" {
            if self.pre > 0 {
                self.end_pre_line();
            } else {
                self.end_line();
            }
        } else if name == "pre" {
            self.end_line();
            self.b.blank();
            self.pre += 1;
        } else if name == "tr" {
            self.end_line();
            self.cell_in_row = false;
        } else if HTML_PARAGRAPH.contains(&name) {
            self.end_line();
            self.b.blank();
        } else if HTML_LINE.contains(&name) {
            self.end_line();
        }
    }

    fn close(&mut self, name: &str) {
        if let Some((level, _)) = &self.heading {
            if heading_level(name) == Some(*level)
                && let Some((level, buf)) = self.heading.take()
            {
                let title = buf.trim();
                if !title.is_empty() {
                    self.b.heading(level, title, title);
                }
            }
            return;
        }
        if name == "td" || name == "th" {
            self.cells = self.cells.saturating_sub(1);
            return;
        }
        if self.cells > 0 {
            if html_breaks_line(name) {
                self.pending_space = true;
            }
            return;
        }
        if name == "pre" {
            self.end_pre_line();
            self.b.blank();
            self.pre = self.pre.saturating_sub(1);
        } else if name == "tr" {
            self.end_line();
            self.cell_in_row = false;
        } else if HTML_PARAGRAPH.contains(&name) {
            self.end_line();
            self.b.blank();
        } else if HTML_LINE.contains(&name) {
            self.end_line();
        }
    }

    fn end_line(&mut self) {
        let line = self.line.trim_end();
        if !line.is_empty() {
            self.b.line(line);
        }
        self.line.clear();
        self.pending_space = false;
    }

    fn end_pre_line(&mut self) {
        self.b.line(self.line.trim_end());
        self.line.clear();
        self.pending_space = false;
    }
}

/// Appends `t` with whitespace runs collapsed to one space; a space is only
/// written once non-space text follows on the same line.
fn push_collapsed(dst: &mut String, pending_space: &mut bool, t: &str) {
    for (i, word) in t.split(char::is_whitespace).enumerate() {
        if i > 0 {
            // Whitespace separated this piece from the previous one.
            *pending_space = true;
        }
        if word.is_empty() {
            continue;
        }
        if *pending_space && !dst.is_empty() && !dst.ends_with(' ') {
            dst.push(' ');
        }
        dst.push_str(word);
        *pending_space = false;
    }
}

// ---------------------------------------------------------------------------
// DOCX
// ---------------------------------------------------------------------------

/// Reads `word/document.xml` (and `word/styles.xml` for heading styles).
fn extract_docx(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| ExtractError::Docx(e.to_string()))?;
    let document = match read_zip_text(&mut archive, "word/document.xml")? {
        Some(xml) => xml,
        None => return Err(ExtractError::DocxNoDocument),
    };
    let styles = match read_zip_text(&mut archive, "word/styles.xml")? {
        Some(xml) => heading_styles(&xml),
        None => HashMap::new(),
    };
    docx_sections(&document, &styles)
}

/// Reads a (size-limited) text part of the archive; `None` if absent.
fn read_zip_text(
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &str,
) -> Result<Option<String>, ExtractError> {
    let file = match archive.by_name(name) {
        Ok(file) => file,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(ExtractError::Docx(e.to_string())),
    };
    if file.size() > DOCX_XML_LIMIT {
        return Err(ExtractError::DocxTooLarge(DOCX_XML_LIMIT >> 20));
    }
    let mut buf = Vec::with_capacity(file.size() as usize);
    file.take(DOCX_XML_LIMIT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ExtractError::Docx(e.to_string()))?;
    if buf.len() as u64 > DOCX_XML_LIMIT {
        return Err(ExtractError::DocxTooLarge(DOCX_XML_LIMIT >> 20));
    }
    decode_text(&buf)
        .map(Some)
        .map_err(|_| ExtractError::Docx(format!("{name} is not text")))
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.try_get_attribute(name)
        .ok()
        .flatten()
        .map(|a| a.value.into_owned())
}

/// Heading level (0 for Title, 1..=9 for headings) from a style's name or
/// outline level. Built-in names are English in every Word locale.
fn style_level(style_id: &str, name: Option<&str>, outline: Option<u8>) -> Option<u8> {
    let level_from = |s: &str| -> Option<u8> {
        let s = s.to_ascii_lowercase();
        if s == "title" {
            return Some(0);
        }
        let digits = s.strip_prefix("heading")?.trim_start();
        let n: u8 = digits.parse().ok()?;
        (1..=9).contains(&n).then_some(n)
    };
    name.and_then(level_from)
        .or_else(|| level_from(style_id))
        .or(outline)
}

/// Maps style ids to heading levels using `word/styles.xml`.
fn heading_styles(xml: &str) -> HashMap<String, u8> {
    let mut map = HashMap::new();
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = false;
    let mut current: Option<(String, Option<String>, Option<u8>)> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.name().0 == "w:style" => {
                current = attr(&e, "w:styleId").map(|id| (id, None, None));
            }
            Ok(Event::Empty(e)) | Ok(Event::Start(e)) => {
                if let Some((_, name, outline)) = &mut current {
                    match e.name().0 {
                        "w:name" => *name = attr(&e, "w:val"),
                        "w:outlineLvl" => {
                            *outline = attr(&e, "w:val")
                                .and_then(|v| v.parse::<u8>().ok())
                                .filter(|&v| v < 9)
                                .map(|v| v + 1);
                        }
                        _ => {}
                    }
                }
            }
            Ok(Event::End(e)) if e.name().0 == "w:style" => {
                if let Some((id, name, outline)) = current.take()
                    && let Some(level) = style_level(&id, name.as_deref(), outline)
                {
                    map.insert(id, level);
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    map
}

#[derive(Default)]
struct DocxPara {
    text: String,
    style: Option<String>,
    outline: Option<u8>,
}

#[derive(Default)]
struct DocxTable {
    cells: Vec<String>,
    cell: String,
}

/// Paragraphs become lines; Title/Heading1..9 paragraphs (by style, or by an
/// explicit outline level) start sections; table rows become one line with
/// cells joined by `" | "`. Deleted text, field codes and the fallback copy
/// of drawings (`mc:Fallback`) are skipped.
fn docx_sections(xml: &str, styles: &HashMap<String, u8>) -> Result<Vec<Section>, ExtractError> {
    let mut b = SectionBuilder::default();
    let mut paras: Vec<DocxPara> = Vec::new();
    let mut tables: Vec<DocxTable> = Vec::new();
    let mut in_run = 0usize;
    let mut in_text = false;
    let mut in_ppr = false;
    let mut skip_depth = 0usize;

    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| ExtractError::Docx(format!("word/document.xml is malformed: {e}")))?;
        match event {
            Event::Start(e) => {
                if skip_depth > 0 {
                    skip_depth += 1;
                    continue;
                }
                match e.name().0 {
                    "mc:Fallback" => skip_depth = 1,
                    "w:p" => paras.push(DocxPara::default()),
                    "w:pPr" => in_ppr = true,
                    "w:r" => in_run += 1,
                    "w:t" => in_text = true,
                    "w:tbl" => tables.push(DocxTable::default()),
                    "w:tr" => {
                        if let Some(t) = tables.last_mut() {
                            t.cells.clear();
                        }
                    }
                    "w:tc" => {
                        if let Some(t) = tables.last_mut() {
                            t.cell.clear();
                        }
                    }
                    _ => docx_empty(&e, &mut paras, in_run > 0, in_ppr),
                }
            }
            Event::Empty(e) => {
                if skip_depth > 0 {
                    continue;
                }
                if e.name().0 == "w:p" {
                    // An empty paragraph separates paragraphs.
                    if tables.is_empty() {
                        b.blank();
                    }
                } else {
                    docx_empty(&e, &mut paras, in_run > 0, in_ppr);
                }
            }
            Event::Text(t) => {
                if in_text
                    && skip_depth == 0
                    && let Some(p) = paras.last_mut()
                {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if in_text
                    && skip_depth == 0
                    && let Some(p) = paras.last_mut()
                {
                    p.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if in_text
                    && skip_depth == 0
                    && let Some(p) = paras.last_mut()
                {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => Some(c),
                        _ => match &*r {
                            "amp" => Some('&'),
                            "lt" => Some('<'),
                            "gt" => Some('>'),
                            "quot" => Some('"'),
                            "apos" => Some('\''),
                            _ => None,
                        },
                    };
                    if let Some(c) = c {
                        p.text.push(c);
                    }
                }
            }
            Event::End(e) => {
                if skip_depth > 0 {
                    skip_depth -= 1;
                    continue;
                }
                match e.name().0 {
                    "w:t" => in_text = false,
                    "w:r" => in_run = in_run.saturating_sub(1),
                    "w:pPr" => in_ppr = false,
                    "w:p" => {
                        if let Some(p) = paras.pop() {
                            finish_docx_para(p, &mut b, &mut tables, styles);
                        }
                    }
                    "w:tc" => {
                        if let Some(t) = tables.last_mut() {
                            let cell = t.cell.trim().to_owned();
                            t.cells.push(cell);
                            t.cell.clear();
                        }
                    }
                    "w:tr" => {
                        if let Some(t) = tables.last_mut() {
                            let row = std::mem::take(&mut t.cells);
                            if row.iter().any(|c| !c.is_empty()) {
                                let line = row.join(" | ");
                                let depth = tables.len();
                                if depth > 1 {
                                    let parent = &mut tables[depth - 2].cell;
                                    if !parent.is_empty() {
                                        parent.push_str("; ");
                                    }
                                    parent.push_str(&line);
                                } else {
                                    b.line(&line);
                                }
                            }
                        }
                    }
                    "w:tbl" => {
                        tables.pop();
                        if tables.is_empty() {
                            b.blank();
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(b.finish())
}

/// Handles the run- and paragraph-property elements that carry no content.
fn docx_empty(e: &BytesStart<'_>, paras: &mut [DocxPara], in_run: bool, in_ppr: bool) {
    let Some(p) = paras.last_mut() else {
        return;
    };
    match e.name().0 {
        "w:pStyle" if in_ppr => p.style = attr(e, "w:val"),
        "w:outlineLvl" if in_ppr => {
            p.outline = attr(e, "w:val")
                .and_then(|v| v.parse::<u8>().ok())
                .filter(|&v| v < 9)
                .map(|v| v + 1);
        }
        "w:tab" if in_run && !in_ppr => p.text.push('\t'),
        "w:br" | "w:cr" if in_run && !in_ppr => p.text.push('\n'),
        "w:noBreakHyphen" if in_run => p.text.push('-'),
        _ => {}
    }
}

fn finish_docx_para(
    p: DocxPara,
    b: &mut SectionBuilder,
    tables: &mut [DocxTable],
    styles: &HashMap<String, u8>,
) {
    let text = p.text.trim();
    if let Some(t) = tables.last_mut() {
        if !text.is_empty() {
            if !t.cell.is_empty() {
                t.cell.push(' ');
            }
            t.cell.push_str(&text.replace('\n', " "));
        }
        return;
    }
    if text.is_empty() {
        b.blank();
        return;
    }
    let level = p.outline.or_else(|| {
        let style = p.style.as_deref()?;
        styles
            .get(style)
            .copied()
            .or_else(|| style_level(style, None, None))
    });
    match level {
        Some(level) => {
            let title = text.split_whitespace().collect::<Vec<_>>().join(" ");
            b.heading(level, &title, &title);
        }
        None => b.line(text),
    }
}

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

/// Each data row becomes a line `"header1: value1; header2: value2"` (empty
/// values omitted, newlines inside values turned into spaces). The delimiter
/// (`,` `;` or tab) is guessed from the first line.
fn csv_sections(text: &str) -> Result<Vec<Section>, ExtractError> {
    let delimiter = sniff_delimiter(text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let headers: Vec<String> = match records.next() {
        Some(Ok(r)) if r.len() > CSV_MAX_COLUMNS => {
            return Err(ExtractError::CsvTooWide(CSV_MAX_COLUMNS));
        }
        Some(r) => r
            .map_err(|e| ExtractError::Csv(e.to_string()))?
            .iter()
            .map(|h| one_line(h.trim()))
            .collect(),
        None => return Ok(Vec::new()),
    };
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut rows = 0usize;
    for record in records {
        let record = record.map_err(|e| ExtractError::Csv(e.to_string()))?;
        let start = out.len();
        for (i, value) in record.iter().enumerate() {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if out.len() > start {
                out.push_str("; ");
            }
            match headers.get(i).filter(|h| !h.is_empty()) {
                Some(h) => out.push_str(h),
                None => {
                    let _ = write!(out, "column {}", i + 1);
                }
            }
            out.push_str(": ");
            push_one_line(&mut out, value);
        }
        if out.len() > start {
            out.push('\n');
            rows += 1;
        }
    }
    if rows == 0 {
        // Only a header row: its names are the only text there is.
        out = headers
            .iter()
            .filter(|h| !h.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
    }
    Ok(vec![Section {
        text: out.trim_end().to_owned(),
        page: None,
        heading: None,
    }])
}

/// Most columns read from a CSV: each row becomes `header: value` pairs,
/// and a million columns only make one endless line.
const CSV_MAX_COLUMNS: usize = 10_000;

fn sniff_delimiter(text: &str) -> u8 {
    let first = text.split('\n').next().unwrap_or_default();
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for b in first.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        candidates[best]
    }
}

fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_one_line(&mut out, s);
    out
}

fn push_one_line(out: &mut String, s: &str) {
    if s.contains('\n') {
        out.push_str(&s.split_whitespace().collect::<Vec<_>>().join(" "));
    } else {
        out.push_str(s);
    }
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// Flattens to lines `path.to.key: value` (array items as `path[0]`), in
/// document order. A top-level array's objects each become a block of lines
/// with paths relative to the element, separated by an empty line.
fn json_sections(text: &str) -> Result<Vec<Section>, ExtractError> {
    let mut flat = Flattener {
        out: String::with_capacity(text.len()),
        path: String::new(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    JsonNode {
        flat: &mut flat,
        top: true,
        index: None,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| ExtractError::Json(e.to_string()))?;
    Ok(vec![Section {
        text: flat.out.trim_end().to_owned(),
        page: None,
        heading: None,
    }])
}

struct Flattener {
    out: String,
    path: String,
}

impl Flattener {
    fn scalar(&mut self, value: &str) {
        if !self.path.is_empty() {
            self.out.push_str(&self.path);
            self.out.push_str(": ");
        }
        self.out.push_str(value);
        self.out.push('\n');
    }
}

/// Deserializes one JSON value straight into lines (no `Value` tree, so key
/// order is kept). `index` is a pending `[i]` path step for top-level array
/// items, applied unless the item is an object (then it is a block).
struct JsonNode<'a> {
    flat: &'a mut Flattener,
    top: bool,
    index: Option<usize>,
}

impl JsonNode<'_> {
    fn scalar(self, value: &str) {
        let len = self.flat.path.len();
        if let Some(i) = self.index {
            let _ = write!(self.flat.path, "[{i}]");
        }
        self.flat.scalar(value);
        self.flat.path.truncate(len);
    }
}

impl<'de> DeserializeSeed<'de> for JsonNode<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonNode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.scalar(if v { "true" } else { "false" });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.scalar(&v.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.scalar(&v.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => self.scalar(&n.to_string()),
            None => self.scalar(&v.to_string()),
        }
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.scalar(v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.scalar("null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let len = self.flat.path.len();
        if let Some(i) = self.index {
            let _ = write!(self.flat.path, "[{i}]");
        }
        let base = self.flat.path.len();
        let mut i = 0usize;
        loop {
            let item = if self.top {
                seq.next_element_seed(JsonNode {
                    flat: &mut *self.flat,
                    top: false,
                    index: Some(i),
                })?
            } else {
                let _ = write!(self.flat.path, "[{i}]");
                let item = seq.next_element_seed(JsonNode {
                    flat: &mut *self.flat,
                    top: false,
                    index: None,
                })?;
                self.flat.path.truncate(base);
                item
            };
            if item.is_none() {
                break;
            }
            i += 1;
        }
        self.flat.path.truncate(len);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // A top-level array item that is an object is a block: paths are
        // relative to it, and an empty line closes it.
        let block = self.index.is_some();
        let base = self.flat.path.len();
        while map
            .next_key_seed(JsonKey {
                path: &mut self.flat.path,
            })?
            .is_some()
        {
            map.next_value_seed(JsonNode {
                flat: &mut *self.flat,
                top: false,
                index: None,
            })?;
            self.flat.path.truncate(base);
        }
        if block && !self.flat.out.is_empty() && !self.flat.out.ends_with("\n\n") {
            self.flat.out.push('\n');
        }
        Ok(())
    }
}

/// Appends `.key` (or `key` at the root) to the path.
struct JsonKey<'a> {
    path: &'a mut String,
}

impl<'de> DeserializeSeed<'de> for JsonKey<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for JsonKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(v);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// PDF
// ---------------------------------------------------------------------------

/// Text of each page (1-based page numbers) via pdf-extract. A page that
/// fails or panics is skipped; if every page fails the first error is
/// returned, and if no page has text the PDF counts as scanned.
fn extract_pdf(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    let mut doc = guard(|| pdf_extract::Document::load_mem(bytes))?
        .map_err(|e| ExtractError::Pdf(e.to_string()))?;
    if doc.is_encrypted() && guard(|| doc.decrypt(""))?.is_err() {
        return Err(ExtractError::PdfEncrypted);
    }
    guard(|| check_pdf_forms(&doc))??;
    let pages: Vec<u32> = guard(|| doc.get_pages().into_keys().collect())?;
    let mut sections = Vec::with_capacity(pages.len());
    let mut first_error = None;
    for number in pages {
        let page = guard(|| {
            let mut text = String::new();
            let mut output = pdf_extract::PlainTextOutput::new(&mut text);
            pdf_extract::output_doc_page(&doc, &mut output, number)
                .map_err(|e| ExtractError::Pdf(e.to_string()))?;
            Ok(text)
        })
        .and_then(|r| r);
        match page {
            Ok(text) => {
                let text = normalize_text(text);
                let text = text.trim();
                if !text.is_empty() {
                    sections.push(Section {
                        text: text.to_owned(),
                        page: Some(number),
                        heading: None,
                    });
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (sections.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(ExtractError::PdfNoText),
        (false, _) => Ok(sections),
    }
}

/// Deepest nesting of PDF forms (XObjects drawing XObjects) read.
const PDF_MAX_FORM_DEPTH: usize = 32;
/// Most form drawings one form may lead to, its nested ones counted as
/// often as they are drawn.
const PDF_MAX_FORM_DRAWS: u64 = 10_000;

/// Refuses PDFs whose forms draw themselves (pdf-extract would recurse
/// until the stack overflows) or fan out (each drawing the next twice, 40
/// levels deep, is 2^40 drawings), before pdf-extract walks them. Each
/// form is read once.
fn check_pdf_forms(doc: &pdf_extract::Document) -> Result<(), ExtractError> {
    use pdf_extract::{Object, ObjectId};
    use std::collections::HashSet;

    struct Walk<'d> {
        doc: &'d pdf_extract::Document,
        draws: HashMap<ObjectId, u64>,
        open: HashSet<ObjectId>,
    }
    impl Walk<'_> {
        /// The named forms of a resources dictionary.
        fn forms(&self, resources: Option<&Object>) -> Vec<(Vec<u8>, ObjectId)> {
            fn dict<'a>(
                doc: &'a pdf_extract::Document,
                o: &'a Object,
            ) -> Option<&'a pdf_extract::Dictionary> {
                doc.dereference(o).ok()?.1.as_dict().ok()
            }
            let dict = |o| dict(self.doc, o);
            let Some(xobjects) = resources
                .and_then(dict)
                .and_then(|r| r.get(b"XObject").ok())
            else {
                return Vec::new();
            };
            let Some(xobjects) = dict(xobjects) else {
                return Vec::new();
            };
            xobjects
                .iter()
                .filter_map(|(name, o)| Some((name.clone(), o.as_reference().ok()?)))
                .collect()
        }

        /// Drawings that drawing form `id` makes, itself included.
        fn draws(&mut self, id: ObjectId, depth: usize) -> Result<u64, ExtractError> {
            if let Some(&n) = self.draws.get(&id) {
                return Ok(n);
            }
            if depth > PDF_MAX_FORM_DEPTH || !self.open.insert(id) {
                return Err(ExtractError::PdfFormsNested(PDF_MAX_FORM_DEPTH));
            }
            let mut total = 1u64;
            if let Ok(Object::Stream(form)) = self.doc.get_object(id)
                && form.dict.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Form")
            {
                let children = self.forms(form.dict.get(b"Resources").ok());
                if !children.is_empty() {
                    let content = form
                        .decompressed_content()
                        .unwrap_or_else(|_| form.content.clone());
                    let ops = pdf_extract::content::Content::decode(&content)
                        .map(|c| c.operations)
                        .unwrap_or_default();
                    for op in ops.iter().filter(|op| op.operator == "Do") {
                        let Some(name) = op.operands.first().and_then(|o| o.as_name().ok()) else {
                            continue;
                        };
                        if let Some(&(_, child)) = children.iter().find(|(n, _)| n == name) {
                            total = total.saturating_add(self.draws(child, depth + 1)?);
                            if total > PDF_MAX_FORM_DRAWS {
                                return Err(ExtractError::PdfTooManyForms(PDF_MAX_FORM_DRAWS));
                            }
                        }
                    }
                }
            }
            self.open.remove(&id);
            self.draws.insert(id, total);
            Ok(total)
        }
    }

    let mut walk = Walk {
        doc,
        draws: HashMap::new(),
        open: HashSet::new(),
    };
    for page in doc.get_pages().into_values() {
        let Ok((own, inherited)) = doc.get_page_resources(page) else {
            continue;
        };
        let mut resources: Vec<Object> = own.cloned().map(Object::Dictionary).into_iter().collect();
        resources.extend(inherited.into_iter().map(Object::Reference));
        for r in &resources {
            for (_, form) in walk.forms(Some(r)) {
                walk.draws(form, 1)?;
            }
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic inside the PDF reader into an error.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, ExtractError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown error".to_owned());
        ExtractError::Pdf(format!("the PDF reader failed ({detail})"))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::fixtures::{
        CONTENT_TYPES, docx, docx_with_styles, pdf_with_pages, zip_of,
    };

    fn sections(bytes: &[u8], format: Format) -> Vec<Section> {
        extract(bytes, format).unwrap_or_else(|e| panic!("extract failed: {e}"))
    }

    // -- Format ------------------------------------------------------------

    #[test]
    fn content_types_map_to_formats_and_back() {
        assert_eq!(
            Format::from_content_type("text/plain; charset=utf-8"),
            Some(Format::PlainText)
        );
        assert_eq!(
            Format::from_content_type("Application/PDF"),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::from_content_type("text/x-markdown"),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::from_content_type(" text/html ;charset=ISO-8859-1"),
            Some(Format::Html)
        );
        assert_eq!(Format::from_content_type(DOCX_MIME), Some(Format::Docx));
        assert_eq!(Format::from_content_type("text/csv"), Some(Format::Csv));
        assert_eq!(
            Format::from_content_type("application/json"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type("image/png"), None);
        assert_eq!(Format::from_content_type(""), None);
        for f in [
            Format::Pdf,
            Format::PlainText,
            Format::Markdown,
            Format::Html,
            Format::Docx,
            Format::Csv,
            Format::Json,
        ] {
            assert_eq!(Format::from_content_type(f.mime()), Some(f));
        }
    }

    // -- Sniffing ------------------------------------------------------------

    #[test]
    fn sniff_recognises_pdf_docx_and_binaries() {
        assert_eq!(sniff(&two_page_pdf()), Ok(Some(Format::Pdf)));
        assert_eq!(sniff(&docx(SIMPLE_DOCX_BODY)), Ok(Some(Format::Docx)));
        assert_eq!(sniff(b"hello, world"), Ok(None));
        assert_eq!(sniff(b""), Ok(None));
        assert!(matches!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Err(ExtractError::Unsupported("a PNG image"))
        ));
        let other_zip = zip_of(&[("data/readme.txt", "hi")]);
        assert!(matches!(
            sniff(&other_zip),
            Err(ExtractError::Unsupported("a ZIP archive"))
        ));
        let xlsx = zip_of(&[("xl/workbook.xml", "<workbook/>")]);
        assert!(matches!(
            sniff(&xlsx),
            Err(ExtractError::Unsupported(k)) if k.contains("XLSX")
        ));
    }

    #[test]
    fn pdf_declared_as_text_is_refused() {
        let err = extract(&two_page_pdf(), Format::PlainText).unwrap_err();
        assert_eq!(
            err,
            ExtractError::Mismatch {
                actual: "a PDF",
                declared: "text/plain"
            }
        );
        assert_eq!(
            err.to_string(),
            "the file is a PDF but was uploaded as text/plain"
        );
        let err = extract(&docx(SIMPLE_DOCX_BODY), Format::Pdf).unwrap_err();
        assert!(matches!(err, ExtractError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn binary_declared_as_text_is_refused() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10";
        assert_eq!(
            extract(png, Format::PlainText).unwrap_err().to_string(),
            "the file is a PNG image, which is not a supported document type"
        );
        let zip = zip_of(&[("a.txt", "hello")]);
        assert!(matches!(
            extract(&zip, Format::Markdown),
            Err(ExtractError::Unsupported(_))
        ));
        // Unknown binary: lots of control bytes.
        let junk: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
        assert_eq!(
            extract(&junk, Format::PlainText),
            Err(ExtractError::NotText)
        );
    }

    // -- Text decoding -------------------------------------------------------

    #[test]
    fn utf8_bom_crlf_and_nul_are_normalised() {
        let s = sections(
            b"\xEF\xBB\xBFline one\r\nline\0 two\rthree",
            Format::PlainText,
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].text, "line one\nline two\nthree");
        assert_eq!(s[0].page, None);
        assert_eq!(s[0].heading, None);
    }

    #[test]
    fn utf16le_with_bom_is_decoded() {
        let mut bytes = vec![0xFF, 0xFE];
        for unit in "Grüße, 世界\r\nzweite Zeile".encode_utf16() {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        let s = sections(&bytes, Format::PlainText);
        assert_eq!(s[0].text, "Grüße, 世界\nzweite Zeile");
    }

    #[test]
    fn utf16be_with_bom_and_bomless_utf16le_are_decoded() {
        let mut be = vec![0xFE, 0xFF];
        let mut le = Vec::new();
        for unit in "plain ASCII heavy text, ça va".encode_utf16() {
            be.extend_from_slice(&unit.to_be_bytes());
            le.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(
            sections(&be, Format::PlainText)[0].text,
            "plain ASCII heavy text, ça va"
        );
        assert_eq!(
            sections(&le, Format::PlainText)[0].text,
            "plain ASCII heavy text, ça va"
        );
    }

    #[test]
    fn latin1_falls_back_when_not_utf8() {
        // "Café déjà vu – naïve" in Windows-1252 (0x96 is an en dash).
        let bytes = b"Caf\xE9 d\xE9j\xE0 vu \x96 na\xEFve";
        assert_eq!(
            sections(bytes, Format::PlainText)[0].text,
            "Café déjà vu – naïve"
        );
    }

    #[test]
    fn truncated_utf8_stays_utf8() {
        let mut bytes = "ünïcode".as_bytes().to_vec();
        bytes.extend_from_slice(&"é".as_bytes()[..1]);
        assert_eq!(
            sections(&bytes, Format::PlainText)[0].text,
            "ünïcode\u{FFFD}"
        );
    }

    #[test]
    fn form_feeds_split_plain_text_into_pages() {
        let s = sections(b"first page\x0c\x0cthird page\n", Format::PlainText);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].text.as_str(), s[0].page), ("first page", Some(1)));
        assert_eq!((s[1].text.as_str(), s[1].page), ("third page", Some(3)));
    }

    #[test]
    fn empty_or_blank_text_is_an_error() {
        assert_eq!(
            extract(b"  \n\t\r\n", Format::PlainText),
            Err(ExtractError::NoText)
        );
        assert_eq!(extract(b"", Format::Markdown), Err(ExtractError::NoText));
    }

    // -- Markdown --------------------------------------------------------------

    #[test]
    fn markdown_heading_paths_ignore_hashes_in_code_fences() {
        let md = "Intro text before any heading.\n\
                  \n\
                  # Methods\n\
                  Overview of methods.\n\
                  \n\
                  ## Participants\n\
                  We recruited 40 people.\n\
                  ```bash\n\
                  # not a heading\n\
                  echo hi\n\
                  ```\n\
                  ### Exclusions ###\n\
                  Two were excluded.\n\
                  ## Analysis\n\
                  ~~~\n\
                  ## still code\n\
                  ~~~\n\
                  # Results\n\
                  It worked.\n";
        let s = sections(md.as_bytes(), Format::Markdown);
        let got: Vec<(Option<&str>, &str)> = s
            .iter()
            .map(|s| (s.heading.as_deref(), s.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, "Intro text before any heading."),
                (Some("Methods"), "# Methods\nOverview of methods."),
                (
                    Some("Methods > Participants"),
                    "## Participants\nWe recruited 40 people.\n```bash\n# not a heading\necho hi\n```"
                ),
                (
                    Some("Methods > Participants > Exclusions"),
                    "### Exclusions ###\nTwo were excluded."
                ),
                (
                    Some("Methods > Analysis"),
                    "## Analysis\n~~~\n## still code\n~~~"
                ),
                (Some("Results"), "# Results\nIt worked."),
            ]
        );
        assert!(s.iter().all(|s| s.page.is_none()));
    }

    #[test]
    fn markdown_setext_headings_and_heading_only_sections() {
        let md = "Title\n=====\n\n# Empty parent\n## Child\nbody text\n\nSub\n---\nmore\n\n- item\n---\n";
        let s = sections(md.as_bytes(), Format::Markdown);
        let headings: Vec<Option<&str>> = s.iter().map(|s| s.heading.as_deref()).collect();
        assert_eq!(
            headings,
            vec![Some("Empty parent > Child"), Some("Empty parent > Sub")]
        );
        assert_eq!(s[1].text, "Sub\n---\nmore\n\n- item\n---");
        // "#hashtag" and "#######" are not headings.
        let s = sections(b"#hashtag\n####### seven\ntext", Format::Markdown);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].heading, None);
    }

    #[test]
    fn overlong_headings_are_body_text_and_long_titles_are_cut() {
        let long_title = "t".repeat(300);
        let huge = "word ".repeat(400);
        let md = format!("# {long_title}\nbody\n## {huge}\nmore");
        let s = sections(md.as_bytes(), Format::Markdown);
        assert_eq!(s.len(), 1, "{s:?}");
        let heading = s[0].heading.as_deref().unwrap();
        assert_eq!(heading.chars().count(), MAX_TITLE_CHARS + 1);
        assert!(heading.ends_with('…'));
        assert!(s[0].text.ends_with(&format!("## {huge}\nmore")));
        // An unclosed <h2> swallowing the page is not a heading either.
        let html = format!("<h1>Top</h1><p>intro</p><h2>{huge}");
        let s = sections(html.as_bytes(), Format::Html);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].heading.as_deref(), Some("Top"));
        assert!(s[0].text.ends_with(huge.trim_end()));
    }

    // -- HTML ------------------------------------------------------------------

    #[test]
    fn html_drops_scripts_and_keeps_heading_paths() {
        let html = r##"<!doctype html><html><head><title>Page title</title>
            <style>body { color: red }</style><script>var x = "<h1>no</h1>";</script></head>
            <body>
              <nav>Home &amp; away</nav>
              <h1>Guide</h1>
              <p>First   paragraph
                 with <b>bold</b>and <a href="#">a link</a>.</p>
              <noscript>Enable JavaScript</noscript>
              <h2>Install <small>(v2)</small></h2>
              <ul><li>Step one</li><li>Step two<br>continued</li></ul>
              <div hidden>secret</div>
              <pre>  indented
    code</pre>
              <h3>Details</h3>
              <table><tr><th>Name</th><th>Value</th></tr><tr><td>a</td><td>1</td></tr>
                <tr><td><p>Ann</p><p>Lee</p></td><td>41<br>years <h4>not a heading</h4></td></tr></table>
              <h2>Usage</h2><template><p>tmpl</p></template><div>Run it.</div>
              <script>alert(1)</script>
            </body></html>"##;
        let s = sections(html.as_bytes(), Format::Html);
        let got: Vec<(Option<&str>, &str)> = s
            .iter()
            .map(|s| (s.heading.as_deref(), s.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, "Home & away"),
                (Some("Guide"), "Guide\nFirst paragraph with boldand a link."),
                (
                    Some("Guide > Install (v2)"),
                    "Install (v2)\nStep one\nStep two\ncontinued\n\n  indented\n    code"
                ),
                (
                    Some("Guide > Install (v2) > Details"),
                    "Details\nName | Value\na | 1\nAnn Lee | 41 years not a heading"
                ),
                (Some("Guide > Usage"), "Usage\nRun it."),
            ]
        );
        let all: String = s.iter().map(|s| s.text.as_str()).collect();
        for dropped in [
            "Page title",
            "color",
            "alert",
            "secret",
            "JavaScript",
            "tmpl",
            "no<",
        ] {
            assert!(!all.contains(dropped), "{dropped:?} leaked into {all:?}");
        }
    }

    // -- DOCX ------------------------------------------------------------------

    const SIMPLE_DOCX_BODY: &str = r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Introduction</w:t></w:r></w:p>
<w:p><w:r><w:t>Hello</w:t></w:r><w:r><w:t xml:space="preserve"> world &amp; friends</w:t></w:r></w:p>"#;

    #[test]
    fn html_nested_past_the_bound_or_with_endless_attributes_is_refused() {
        let deep = |n: usize| format!("{}text{}", "<div>".repeat(n), "</div>".repeat(n));
        assert!(extract(deep(HTML_MAX_DEPTH).as_bytes(), Format::Html).is_ok());
        assert_eq!(
            extract(deep(HTML_MAX_DEPTH + 1).as_bytes(), Format::Html),
            Err(ExtractError::HtmlTooDeep(HTML_MAX_DEPTH))
        );
        // Closed siblings, void and optional-end elements, comments and
        // scripts do not add up.
        let wide = format!(
            "<ul>{}</ul><p>one<p>two<br><img src=x>{}<script>{}</script>",
            "<li><div><b>x</b></div>".repeat(5000),
            "<!-- <div> -->".repeat(1000),
            "'<div>'.repeat(9);".repeat(1000),
        );
        assert!(extract(wide.as_bytes(), Format::Html).is_ok());
        let attributes = |n: usize| {
            let attrs: String = (0..n).map(|i| format!(" a{i}=\"v > w\"")).collect();
            format!("<p{attrs}>text</p>")
        };
        assert!(extract(attributes(HTML_MAX_ATTRIBUTES).as_bytes(), Format::Html).is_ok());
        assert_eq!(
            extract(attributes(HTML_MAX_ATTRIBUTES + 1).as_bytes(), Format::Html),
            Err(ExtractError::HtmlTooManyAttributes(HTML_MAX_ATTRIBUTES))
        );
    }

    #[test]
    fn pdf_forms_that_nest_without_end_or_fan_out_are_refused_before_reading() {
        use crate::hostile::pdf_xobjects;
        assert_eq!(
            extract(&pdf_xobjects(1, 1, true), Format::Pdf),
            Err(ExtractError::PdfFormsNested(PDF_MAX_FORM_DEPTH))
        );
        assert_eq!(
            extract(&pdf_xobjects(12, 4, false), Format::Pdf),
            Err(ExtractError::PdfTooManyForms(PDF_MAX_FORM_DRAWS))
        );
        // A few nested forms drawn a few times are read.
        let sections = extract(&pdf_xobjects(3, 2, false), Format::Pdf).unwrap();
        assert!(sections[0].text.contains("fan"), "{sections:?}");
    }

    #[test]
    fn csv_wider_than_the_bound_is_refused() {
        let row = |n: usize| {
            (0..n)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let wide = format!(
            "{}\n{}\n",
            row(CSV_MAX_COLUMNS + 1),
            row(CSV_MAX_COLUMNS + 1)
        );
        assert_eq!(
            extract(wide.as_bytes(), Format::Csv),
            Err(ExtractError::CsvTooWide(CSV_MAX_COLUMNS))
        );
        let ok = format!("{}\n{}\n", row(100), row(100));
        assert!(extract(ok.as_bytes(), Format::Csv).is_ok());
    }

    #[test]
    fn docx_heading_paths_paragraphs_and_tables() {
        let body = r#"
<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Annual Report</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Methods</w:t></w:r></w:p>
<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="720"/></w:tabs></w:pPr><w:r><w:t>Step</w:t></w:r><w:r><w:tab/><w:t>one</w:t><w:br/><w:t>next line</w:t></w:r></w:p>
<w:p/>
<w:p><w:r><w:t>Kept</w:t></w:r><w:del><w:r><w:delText>Deleted</w:delText></w:r></w:del><w:r><w:instrText>PAGE</w:instrText></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Participants</w:t></w:r></w:p>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Name</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Age</w:t></w:r></w:p></w:tc></w:tr>
<w:tr><w:tc><w:p><w:r><w:t>Ann</w:t></w:r></w:p><w:p><w:r><w:t>Lee</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>41</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:t>Box text</w:t></mc:Choice><mc:Fallback><w:t>Box text</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Results</w:t></w:r></w:p>
<w:p><w:r><w:t>It &lt;worked&gt; &#8212; well</w:t></w:r></w:p>"#;
        let s = sections(&docx(body), Format::Docx);
        let got: Vec<(Option<&str>, &str)> = s
            .iter()
            .map(|s| (s.heading.as_deref(), s.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Some("Annual Report > Methods"),
                    "Methods\nStep\tone\nnext line\n\nKept"
                ),
                (
                    Some("Annual Report > Methods > Participants"),
                    "Participants\nName | Age\nAnn Lee | 41\n\nBox text"
                ),
                (
                    Some("Annual Report > Results"),
                    "Results\nIt <worked> — well"
                ),
            ]
        );
    }

    #[test]
    fn docx_localised_heading_styles_come_from_styles_xml() {
        let styles = r#"<w:styles xmlns:w="x">
<w:style w:type="paragraph" w:styleId="berschrift1"><w:name w:val="heading 1"/></w:style>
<w:style w:type="paragraph" w:styleId="Kapitel"><w:name w:val="Kapitel"/><w:pPr><w:outlineLvl w:val="1"/></w:pPr></w:style>
<w:style w:type="paragraph" w:styleId="Standard"><w:name w:val="Normal"/></w:style></w:styles>"#;
        let body = r#"<w:p><w:pPr><w:pStyle w:val="berschrift1"/></w:pPr><w:r><w:t>Einleitung</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Kapitel"/></w:pPr><w:r><w:t>Teil A</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Standard"/></w:pPr><w:r><w:t>Text</w:t></w:r></w:p>"#;
        let s = sections(&docx_with_styles(body, Some(styles)), Format::Docx);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].heading.as_deref(), Some("Einleitung > Teil A"));
        assert_eq!(s[0].text, "Teil A\nText");
    }

    #[test]
    fn docx_errors_are_readable() {
        let no_document = zip_of(&[
            ("[Content_Types].xml", CONTENT_TYPES),
            ("word/other.xml", "<x/>"),
        ]);
        assert_eq!(
            extract_docx(&no_document).unwrap_err().to_string(),
            "the DOCX has no word/document.xml"
        );
        assert!(matches!(
            extract(b"PK\x03\x04 truncated", Format::Docx),
            Err(ExtractError::Unsupported(_))
        ));
        assert!(matches!(
            extract_docx(b"not a zip"),
            Err(ExtractError::Docx(_))
        ));
        let broken = docx("<w:p><w:r><w:t>text</w:t></w:r></w:p><w:p w:x=\"1 <");
        let err = extract(&broken, Format::Docx).unwrap_err();
        assert!(matches!(err, ExtractError::Docx(_)), "{err:?}");
    }

    // -- CSV -------------------------------------------------------------------

    #[test]
    fn csv_rows_become_header_value_lines() {
        let csv = "name,city,note\r\n\"Smith, John\",Paris,\"said \"\"hi\"\"\"\r\nAnn,,\"two\nlines\"\r\n,,\r\n";
        let s = sections(csv.as_bytes(), Format::Csv);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].heading, None);
        assert_eq!(
            s[0].text,
            "name: Smith, John; city: Paris; note: said \"hi\"\nname: Ann; note: two lines"
        );
    }

    #[test]
    fn csv_delimiter_is_sniffed() {
        let s = sections(b"a;b;c\n1,5;2;3\n", Format::Csv);
        assert_eq!(s[0].text, "a: 1,5; b: 2; c: 3");
        let s = sections(b"a\tb\n1\t2\t3\n", Format::Csv);
        assert_eq!(s[0].text, "a: 1; b: 2; column 3: 3");
    }

    // -- JSON ------------------------------------------------------------------

    #[test]
    fn json_is_flattened_in_document_order() {
        let json = r#"{"title": "Doc", "meta": {"tags": ["a", "b"], "n": 1.5, "ok": true, "none": null},
                       "items": [{"id": 1}, [2, 3]], "empty": {}}"#;
        let s = sections(json.as_bytes(), Format::Json);
        assert_eq!(
            s[0].text,
            "title: Doc\nmeta.tags[0]: a\nmeta.tags[1]: b\nmeta.n: 1.5\nmeta.ok: true\n\
             meta.none: null\nitems[0].id: 1\nitems[1][0]: 2\nitems[1][1]: 3"
        );
    }

    #[test]
    fn json_top_level_array_of_objects_gives_blocks() {
        let json = r#"[{"name": "Ann", "address": {"city": "Oslo"}}, {"name": "Bo"}, 7]"#;
        let s = sections(json.as_bytes(), Format::Json);
        assert_eq!(
            s[0].text,
            "name: Ann\naddress.city: Oslo\n\nname: Bo\n\n[2]: 7"
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        for bad in [&b"{\"a\": }"[..], b"{\"a\": 1} trailing", b"[1, 2"] {
            let err = extract(bad, Format::Json).unwrap_err();
            assert!(matches!(err, ExtractError::Json(_)), "{err}");
            assert!(err.to_string().starts_with("the JSON is invalid: "));
        }
        let deep = "[".repeat(10_000);
        assert!(matches!(
            extract(deep.as_bytes(), Format::Json),
            Err(ExtractError::Json(_))
        ));
    }

    // -- PDF -------------------------------------------------------------------

    fn two_page_pdf() -> Vec<u8> {
        pdf_with_pages(&[
            &["Hello from page one", "Second line here"],
            &["Page two says goodbye"],
        ])
    }

    #[test]
    fn pdf_text_comes_with_page_numbers() {
        let s = sections(&two_page_pdf(), Format::Pdf);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].page, Some(1));
        assert_eq!(s[1].page, Some(2));
        assert_eq!(s[0].heading, None);
        let flat = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(flat(&s[0].text), "Hello from page one Second line here");
        assert!(s[0].text.contains("one\nSecond"), "{:?}", s[0].text);
        assert_eq!(flat(&s[1].text), "Page two says goodbye");
    }

    #[test]
    fn pdf_without_text_or_garbage_gives_readable_errors() {
        let blank = pdf_with_pages(&[&[], &[]]);
        assert_eq!(
            extract(&blank, Format::Pdf).unwrap_err().to_string(),
            "the PDF has no extractable text (scanned images are not supported)"
        );
        let err = extract(b"%PDF-1.7\nthis is not really a pdf", Format::Pdf).unwrap_err();
        assert!(matches!(err, ExtractError::Pdf(_)), "{err}");
        assert!(err.to_string().starts_with("the PDF could not be read: "));
        // Truncated in the middle: must be an error, never a panic.
        let pdf = two_page_pdf();
        for cut in [pdf.len() / 3, pdf.len() / 2, pdf.len() - 40] {
            let _ = extract(&pdf[..cut], Format::Pdf);
        }
    }

    #[test]
    fn panics_become_errors() {
        let err = guard(|| -> () { panic!("boom") }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the PDF could not be read: the PDF reader failed (boom)"
        );
    }
}
