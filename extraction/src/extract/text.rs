//! Shared by the formats: decoding text bytes, building sections under
//! heading paths, and plain text itself.

use super::{ExtractError, Section};

// ---------------------------------------------------------------------------
// Text decoding
// ---------------------------------------------------------------------------

/// Decodes text bytes: UTF-8 (BOM stripped), UTF-16 LE/BE (BOM, or the
/// unmistakable every-other-byte-NUL pattern), else Windows-1252 (a superset
/// of printable Latin-1). Then normalises line ends and drops NULs.
pub(super) fn decode_text(bytes: &[u8]) -> Result<String, ExtractError> {
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
pub(super) fn normalize_text(text: String) -> String {
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
pub(super) const MAX_TITLE_CHARS: usize = 200;

/// Accumulates lines into sections, opening a new section at each heading.
#[derive(Default)]
pub(super) struct SectionBuilder {
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
    pub(super) fn heading(&mut self, level: u8, title: &str, line: &str) {
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

    pub(super) fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        if !line.trim().is_empty() {
            self.body_lines += 1;
        }
    }

    /// Ensures a paragraph break (an empty line) before the next line; a
    /// no-op before the section has body text.
    pub(super) fn blank(&mut self) {
        if self.body_lines > 0 && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }

    /// Removes and returns the last body line (for Markdown setext headings).
    pub(super) fn pop_last_line(&mut self) -> Option<String> {
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

    pub(super) fn finish(mut self) -> Vec<Section> {
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
pub(super) fn plain_text_sections(text: &str) -> Vec<Section> {
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

#[cfg(test)]
mod tests {
    use crate::extract::Format;
    use crate::extract::tests::sections;

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
}
