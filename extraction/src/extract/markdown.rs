//! Markdown: sections under ATX and setext headings.

use super::Section;
use super::text::SectionBuilder;

/// Splits at ATX (`#`..`######`) and setext (`===`/`---` under a one-line
/// paragraph) headings; heading lines stay in the section text. Lines inside
/// fenced code blocks (``` or ~~~) are never headings.
pub(super) fn markdown_sections(text: &str) -> Vec<Section> {
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

#[cfg(test)]
mod tests {
    use crate::extract::Format;
    use crate::extract::tests::sections;

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
}
