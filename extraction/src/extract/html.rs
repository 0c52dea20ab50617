//! HTML: html5ever's tree walked into lines under h1–h6 heading paths,
//! after a linear check of the tags' shape that bounds what html5ever
//! is given.

use scraper::{Html, Node};

use super::text::SectionBuilder;
use super::{ExtractError, Section};

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
pub(super) fn check_html_shape(text: &str) -> Result<(), ExtractError> {
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
pub(super) fn html_sections(text: &str) -> Vec<Section> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::tests::sections;
    use crate::extract::{Format, extract};

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
}
