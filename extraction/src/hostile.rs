//! A corpus of files made to hurt an extractor: self-referencing and
//! fanning-out PDFs, deep nesting, endless lines, zip and entity bombs.
//! Generated here rather than committed as binaries; the ingest tests
//! feed them to the worker and `ragway-bench hostile` measures each one.

use crate::fixtures::{docx, pdf_with_pages, zip_of};

/// One hostile file and what must become of it.
pub struct Hostile {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
    /// Words the failure reason must hold; `None`: it may be ingested
    /// (within its bounds) or fail, but not take the worker down.
    pub fails_with: Option<&'static str>,
}

const PDF: &str = "application/pdf";
const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// Every case, at the sizes of the attacks they stand for.
pub fn corpus() -> Vec<Hostile> {
    vec![
        Hostile {
            name: "pdf-self-drawing-form",
            content_type: PDF,
            bytes: pdf_xobjects(1, 1, true),
            fails_with: Some("draw themselves"),
        },
        Hostile {
            name: "pdf-xobject-fan-out",
            content_type: PDF,
            bytes: pdf_xobjects(40, 2, false),
            fails_with: Some("nest more than"),
        },
        Hostile {
            name: "pdf-xobject-wide-fan-out",
            content_type: PDF,
            bytes: pdf_xobjects(12, 4, false),
            fails_with: Some("drawings of forms"),
        },
        Hostile {
            name: "pdf-huge-stream-length",
            content_type: PDF,
            bytes: pdf_huge_length(),
            fails_with: None,
        },
        Hostile {
            name: "html-nested-divs",
            content_type: "text/html",
            bytes: nested("<div>", "</div>", "deep", 100_000),
            fails_with: Some("levels deep"),
        },
        Hostile {
            name: "html-million-attributes",
            content_type: "text/html",
            bytes: html_attributes(1_000_000),
            fails_with: Some("attributes"),
        },
        Hostile {
            name: "csv-one-5mb-line",
            content_type: "text/csv",
            bytes: "field,".repeat(5 * 1024 * 1024 / 6).into_bytes(),
            fails_with: None,
        },
        Hostile {
            name: "csv-million-columns",
            content_type: "text/csv",
            bytes: csv_columns(1_000_000),
            fails_with: Some("columns"),
        },
        Hostile {
            name: "docx-250mb-of-spaces",
            content_type: DOCX,
            bytes: docx_inflating(" ", 250 * 1024 * 1024),
            fails_with: Some("too large once decompressed"),
        },
        Hostile {
            name: "docx-60mb-of-words",
            content_type: DOCX,
            bytes: docx_inflating("lorem ipsum dolor ", 60 * 1024 * 1024),
            fails_with: Some("MB of text"),
        },
        Hostile {
            name: "docx-billion-laughs",
            content_type: DOCX,
            bytes: docx_laughs(),
            fails_with: None,
        },
        Hostile {
            name: "json-nested-100k",
            content_type: "application/json",
            bytes: nested("[", "]", "1", 100_000),
            fails_with: Some("JSON"),
        },
        Hostile {
            name: "json-nul-escapes",
            content_type: "application/json",
            bytes: br#"{"title": "nul\u0000here", "body": ["a\u0000b", "plain words"]}"#.to_vec(),
            fails_with: None,
        },
        Hostile {
            name: "utf16-without-line-breaks",
            content_type: "text/plain",
            bytes: utf16le_words(2 * 1024 * 1024),
            fails_with: None,
        },
        Hostile {
            name: "text-1mb-without-whitespace",
            content_type: "text/plain",
            bytes: "abcdefghij".repeat(100 * 1024).into_bytes(),
            fails_with: None,
        },
    ]
}

/// `open` `depth` times, `inner`, then `close` as many times.
pub fn nested(open: &str, close: &str, inner: &str, depth: usize) -> Vec<u8> {
    let mut out = String::with_capacity((open.len() + close.len()) * depth + inner.len());
    for _ in 0..depth {
        out.push_str(open);
    }
    out.push_str(inner);
    for _ in 0..depth {
        out.push_str(close);
    }
    out.into_bytes()
}

/// A PDF whose page draws form XObject 0; form `i` draws form `i + 1`
/// `fan_out` times, and the last draws some text. With `cyclic`, the last
/// form's resources name the form itself, so drawing it never ends.
pub fn pdf_xobjects(levels: usize, fan_out: usize, cyclic: bool) -> Vec<u8> {
    use pdf_extract::content::{Content, Operation};
    use pdf_extract::{Document, Object, ObjectId, Stream, dictionary};

    let mut doc = Document::with_version("1.5");
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1",
        "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
    });
    let ids: Vec<ObjectId> = (0..levels).map(|_| doc.new_object_id()).collect();
    for (i, &id) in ids.iter().enumerate() {
        let next = if i + 1 < levels {
            Some(ids[i + 1])
        } else if cyclic {
            Some(id)
        } else {
            None
        };
        let mut ops = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Tj", vec![Object::string_literal("fan")]),
            Operation::new("ET", vec![]),
        ];
        if next.is_some() {
            for _ in 0..fan_out {
                ops.push(Operation::new("Do", vec!["X1".into()]));
            }
        }
        let mut resources = dictionary! { "Font" => dictionary! { "F1" => font_id } };
        if let Some(next) = next {
            resources.set("XObject", dictionary! { "X1" => next });
        }
        let content = Content { operations: ops }.encode().unwrap();
        let form = Stream::new(
            dictionary! {
                "Type" => "XObject", "Subtype" => "Form",
                "BBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
                "Resources" => resources,
            },
            content,
        );
        doc.objects.insert(id, Object::Stream(form));
    }
    let page_content = Content {
        operations: vec![Operation::new("Do", vec!["X1".into()])],
    }
    .encode()
    .unwrap();
    let content_id = doc.add_object(Stream::new(dictionary! {}, page_content));
    let pages_id = doc.new_object_id();
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        "Resources" => dictionary! {
            "Font" => dictionary! { "F1" => font_id },
            "XObject" => dictionary! { "X1" => ids[0] },
        },
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

/// A one-page PDF whose content stream claims a length of about a
/// terabyte.
pub fn pdf_huge_length() -> Vec<u8> {
    let pdf = pdf_with_pages(&[&["a stream that lies about its length"]]);
    let text = String::from_utf8_lossy(&pdf).into_owned();
    let patched = regex_free_replace(&text, "/Length ", "/Length 999999999999 0 R %");
    patched.into_bytes()
}

/// Replaces the first `what` and the number after it.
fn regex_free_replace(text: &str, what: &str, with: &str) -> String {
    match text.find(what) {
        Some(at) => {
            let rest = &text[at + what.len()..];
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            format!("{}{with}{}", &text[..at], &rest[digits..])
        }
        None => text.to_owned(),
    }
}

fn html_attributes(n: usize) -> Vec<u8> {
    let mut out = String::from("<html><body><p");
    for i in 0..n {
        out.push_str(&format!(" a{i}=\"\""));
    }
    out.push_str(">attributes</p></body></html>");
    out.into_bytes()
}

fn csv_columns(n: usize) -> Vec<u8> {
    let header: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let row = vec!["v"; n];
    format!("{}\n{}\n", header.join(","), row.join(",")).into_bytes()
}

/// A DOCX whose one paragraph is `unit` repeated to `bytes`: a few
/// hundred KB that inflate to `bytes` of XML.
pub fn docx_inflating(unit: &str, bytes: usize) -> Vec<u8> {
    let text = unit.repeat(bytes / unit.len());
    docx(&format!(
        "<w:p><w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>"
    ))
}

/// A DOCX whose document.xml declares nested entities (a billion laughs
/// if expanded).
fn docx_laughs() -> Vec<u8> {
    let mut dtd = String::from("<!DOCTYPE w:document [\n<!ENTITY lol \"lol\">\n");
    dtd.push_str("<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n");
    for i in 2..=9 {
        let prev = format!("&lol{};", i - 1).repeat(10);
        dtd.push_str(&format!("<!ENTITY lol{i} \"{prev}\">\n"));
    }
    dtd.push_str("]>\n");
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
{dtd}<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>laugh &lol9; end</w:t></w:r></w:p><w:p><w:r><w:t>plain words too</w:t></w:r></w:p></w:body></w:document>"#
    );
    zip_of(&[
        ("[Content_Types].xml", crate::fixtures::CONTENT_TYPES),
        ("word/document.xml", &document),
    ])
}

fn utf16le_words(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 2);
    out.extend_from_slice(b"\xFF\xFE");
    for unit in "words without any line break "
        .repeat(bytes / 58)
        .encode_utf16()
    {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}
