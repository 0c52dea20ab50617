//! DOCX: the body XML of a Word document, with heading levels from its
//! styles.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};

use super::text::{SectionBuilder, decode_text};
use super::{ExtractError, Section};

/// Largest decompressed XML part read from a DOCX (zip-bomb guard). Real
/// documents' XML is a few MB; their size is in images, which are not read.
const DOCX_XML_LIMIT: u64 = 64 * 1024 * 1024;

/// Reads `word/document.xml` (and `word/styles.xml` for heading styles).
pub(super) fn extract_docx(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::tests::{CONTENT_TYPES, docx, docx_with_styles, sections, zip_of};
    use crate::extract::{Format, extract};

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
}
