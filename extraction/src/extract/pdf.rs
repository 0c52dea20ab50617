//! PDF: text by page via pdf-extract, after refusing forms that would
//! make it recurse without end, and with its panics caught.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::text::normalize_text;
use super::{ExtractError, Section};

/// Text of each page (1-based page numbers) via pdf-extract. A page that
/// fails or panics is skipped; if every page fails the first error is
/// returned, and if no page has text the PDF counts as scanned.
pub(super) fn extract_pdf(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
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
mod tests {
    use super::*;
    use crate::extract::tests::{pdf_with_pages, sections, two_page_pdf};
    use crate::extract::{Format, extract};

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
