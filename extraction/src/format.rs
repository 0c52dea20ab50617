//! The document formats ingestion reads and the MIME types that name
//! them: the one list the upload API and the extractor share. Always
//! compiled, without the extractor's dependencies (feature `extract`),
//! so the API functions can use it cheaply.

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
    /// Every format, in the order users are told of them.
    pub const ALL: [Format; 7] = [
        Format::Pdf,
        Format::PlainText,
        Format::Markdown,
        Format::Html,
        Format::Docx,
        Format::Csv,
        Format::Json,
    ];

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
    pub fn describe(self) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_named_by_its_canonical_type_and_aliases() {
        for format in Format::ALL {
            assert_eq!(Format::from_content_type(format.mime()), Some(format));
        }
        for (alias, format) in [
            ("application/x-pdf", Format::Pdf),
            ("Text/Plain; charset=utf-16", Format::PlainText),
            ("text/x-markdown", Format::Markdown),
            ("application/xhtml+xml", Format::Html),
            ("text/tab-separated-values", Format::Csv),
            ("text/json", Format::Json),
            (" text/html ;charset=ISO-8859-1", Format::Html),
            ("Application/PDF", Format::Pdf),
        ] {
            assert_eq!(Format::from_content_type(alias), Some(format), "{alias}");
        }
        assert_eq!(Format::from_content_type("image/png"), None);
        assert_eq!(Format::from_content_type(""), None);
    }
}
