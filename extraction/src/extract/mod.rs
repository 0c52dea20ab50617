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
//!
//! Each format has its own module; `sniff` tells what the bytes really are
//! and `text` holds the decoding and section building the formats share.

mod csv;
mod docx;
mod html;
mod json;
mod markdown;
mod pdf;
mod sniff;
mod text;

pub use crate::format::Format;
pub use sniff::{check_declared, sniff};
use text::decode_text;

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

/// Extracts the text of `bytes` as `format`, in document order.
///
/// Checks the bytes against the declared format first ([`check_declared`]).
/// On success the result is non-empty and no section is blank. Never panics
/// on malformed input (a panic inside the PDF reader becomes an error).
pub fn extract(bytes: &[u8], format: Format) -> Result<Vec<Section>, ExtractError> {
    check_declared(bytes, format)?;
    let sections = match format {
        Format::Pdf => pdf::extract_pdf(bytes)?,
        Format::Docx => docx::extract_docx(bytes)?,
        Format::PlainText => text::plain_text_sections(&decode_text(bytes)?),
        Format::Markdown => markdown::markdown_sections(&decode_text(bytes)?),
        Format::Html => {
            let text = decode_text(bytes)?;
            html::check_html_shape(&text)?;
            html::html_sections(&text)
        }
        Format::Csv => csv::csv_sections(&decode_text(bytes)?)?,
        Format::Json => json::json_sections(&decode_text(bytes)?)?,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::fixtures::{
        CONTENT_TYPES, docx, docx_with_styles, pdf_with_pages, zip_of,
    };

    /// Extracts or fails the test with the error.
    pub(crate) fn sections(bytes: &[u8], format: Format) -> Vec<Section> {
        extract(bytes, format).unwrap_or_else(|e| panic!("extract failed: {e}"))
    }

    pub(crate) const SIMPLE_DOCX_BODY: &str = r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Introduction</w:t></w:r></w:p>
<w:p><w:r><w:t>Hello</w:t></w:r><w:r><w:t xml:space="preserve"> world &amp; friends</w:t></w:r></w:p>"#;

    pub(crate) fn two_page_pdf() -> Vec<u8> {
        pdf_with_pages(&[
            &["Hello from page one", "Second line here"],
            &["Page two says goodbye"],
        ])
    }

    #[test]
    fn empty_or_blank_text_is_an_error() {
        assert_eq!(
            extract(b"  \n\t\r\n", Format::PlainText),
            Err(ExtractError::NoText)
        );
        assert_eq!(extract(b"", Format::Markdown), Err(ExtractError::NoText));
    }

    #[test]
    fn overlong_headings_are_body_text_and_long_titles_are_cut() {
        let long_title = "t".repeat(300);
        let huge = "word ".repeat(400);
        let md = format!("# {long_title}\nbody\n## {huge}\nmore");
        let s = sections(md.as_bytes(), Format::Markdown);
        assert_eq!(s.len(), 1, "{s:?}");
        let heading = s[0].heading.as_deref().unwrap();
        assert_eq!(heading.chars().count(), text::MAX_TITLE_CHARS + 1);
        assert!(heading.ends_with('…'));
        assert!(s[0].text.ends_with(&format!("## {huge}\nmore")));
        // An unclosed <h2> swallowing the page is not a heading either.
        let html = format!("<h1>Top</h1><p>intro</p><h2>{huge}");
        let s = sections(html.as_bytes(), Format::Html);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].heading.as_deref(), Some("Top"));
        assert!(s[0].text.ends_with(huge.trim_end()));
    }
}
