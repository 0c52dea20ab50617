//! What the bytes really are, whatever the upload said: PDF and DOCX by
//! their structure, other binaries by their magic bytes, so a mislabelled
//! file is refused with a message that names it.

use std::io::Cursor;

use super::{ExtractError, Format};

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
/// uploaded as `text/plain`, a PNG uploaded as anything).
/// [`extract`](super::extract) calls it.
pub fn check_declared(bytes: &[u8], declared: Format) -> Result<(), ExtractError> {
    match sniff(bytes)? {
        Some(actual) if actual != declared => Err(ExtractError::Mismatch {
            actual: actual.describe(),
            declared: declared.mime(),
        }),
        _ => Ok(()),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::extract;
    use crate::extract::tests::{SIMPLE_DOCX_BODY, docx, two_page_pdf, zip_of};

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
}
