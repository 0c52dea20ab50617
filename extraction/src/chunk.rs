//! Token-aware chunking of extracted [`Section`]s.
//!
//! Each section is split on its own, so a chunk never spans two pages or two
//! headings and its locator is exact. Splitting is semantic (text-splitter:
//! paragraphs, then lines, sentences, words...) and sized in real
//! `cl100k_base` tokens. Counts come from [`cl100k`], an exact and much faster
//! re-implementation of tiktoken-rs's counting (same ranks, same merges)
//! that indexes each section once, so sizing candidate chunks is cheap.

use std::sync::Arc;

use text_splitter::{ChunkConfig, TextSplitter};

use crate::extract::Section;

mod cl100k;

use cl100k::Counter;

/// The largest char boundary at or below `i`.
fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Chunk size limits, in cl100k tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Upper bound on a chunk's token count (must be > 0).
    pub max_tokens: usize,
    /// Tokens shared by consecutive chunks of one section (must be < `max_tokens`).
    pub overlap_tokens: usize,
}

/// One chunk of a document, ready to embed and store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    /// Position in the document, consecutive from 0.
    pub ordinal: i32,
    /// Trimmed, non-empty text.
    pub content: String,
    /// Exact cl100k token count of `content`; ≤ `max_tokens` unless a single
    /// character needs more tokens than that.
    pub token_count: i32,
    /// 1-based page of the section the chunk came from.
    pub page: Option<i32>,
    /// Heading path of the section the chunk came from.
    pub heading: Option<String>,
}

/// Why a [`Chunker`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk spec: {0}")]
    InvalidSpec(String),
    #[error("the tokenizer could not be loaded: {0}")]
    Tokenizer(String),
}

/// Splits sections into chunks. Expensive to build (loads the tokenizer);
/// build once and share: it is `Send + Sync` and `chunk` takes `&self`.
pub struct Chunker {
    spec: ChunkSpec,
    counter: Counter,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker").field("spec", &self.spec).finish()
    }
}

impl Chunker {
    /// Loads `cl100k_base` and checks the spec; fails if `max_tokens` is 0
    /// or `overlap_tokens >= max_tokens`.
    pub fn new(spec: ChunkSpec) -> Result<Self, ChunkError> {
        if spec.max_tokens == 0 {
            return Err(ChunkError::InvalidSpec("max_tokens must be > 0".into()));
        }
        // The same check text-splitter makes, surfaced here rather than per call.
        ChunkConfig::new(spec.max_tokens)
            .with_overlap(spec.overlap_tokens)
            .map_err(|e| ChunkError::InvalidSpec(e.to_string()))?;
        let bpe = tiktoken_rs::cl100k_base().map_err(|e| ChunkError::Tokenizer(e.to_string()))?;
        let counter = Counter::new(Arc::new(bpe)).map_err(ChunkError::Tokenizer)?;
        Ok(Self { spec, counter })
    }

    /// The spec this chunker was built with.
    pub fn spec(&self) -> ChunkSpec {
        self.spec
    }

    /// Chunks every section separately, in order. Ordinals run from 0 across
    /// the whole document; each chunk keeps its section's page and heading.
    pub fn chunk(&self, sections: &[Section]) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut pieces = Vec::new();
        for section in sections {
            let page = section.page.map(|p| i32::try_from(p).unwrap_or(i32::MAX));
            pieces.clear();
            self.split(&section.text, &mut pieces);
            // A heading and its text too long for one chunk split at the
            // heading line, leaving a chunk of the heading alone; every
            // chunk keeps the heading path (and is embedded with it), so
            // such a chunk says nothing its siblings do not.
            if pieces.len() > 1
                && is_heading_line(
                    &section.text[pieces[0].0..pieces[0].1],
                    section.heading.as_deref(),
                )
            {
                pieces.remove(0);
            }
            for &(start, end, tokens) in &pieces {
                let content = &section.text[start..end];
                if content.is_empty() {
                    continue;
                }
                chunks.push(Chunk {
                    ordinal: i32::try_from(chunks.len()).unwrap_or(i32::MAX),
                    content: content.to_owned(),
                    token_count: i32::try_from(tokens).unwrap_or(i32::MAX),
                    page,
                    heading: section.heading.clone(),
                });
            }
        }
        chunks
    }

    /// `(start, end, tokens)` of each chunk of one section: trimmed byte
    /// ranges and exact token counts.
    ///
    /// text-splitter re-collects and sorts the semantic levels of all the
    /// remaining text for every chunk, which is quadratic in the section
    /// size. So a long section is fed to it in windows: the chunks of a
    /// window are kept up to the last one that may have been shaped by the
    /// window's end, and the next window starts where that chunk started.
    /// Restarting at a chunk start is what the splitter itself does after
    /// each chunk, so the result matches an unwindowed run. Each window is
    /// token-indexed on its own, which keeps the index small and in cache.
    fn split(&self, text: &str, out: &mut Vec<(usize, usize, usize)>) {
        let base_window = (self.spec.max_tokens * 16).max(8 * 1024);
        let mut window = base_window;
        let mut start = 0;
        while start < text.len() {
            let last = text.len() - start <= window;
            let end = if last {
                text.len()
            } else {
                floor_char_boundary(text, start + window)
            };
            let part = &text[start..end];
            let index = self.counter.index(part);
            // Chunks ending this close to a cut may have been shortened by it.
            let margin = if last { 0 } else { 1024.min(window / 16) };
            let config = ChunkConfig::new(self.spec.max_tokens)
                .with_overlap(self.spec.overlap_tokens)
                .expect("overlap checked in Chunker::new")
                .with_sizer(&index);
            let mut restart = None;
            let kept_before = out.len();
            for (offset, chunk) in TextSplitter::new(config).chunk_indices(part) {
                // The splitter trims already; trimming again is a cheap guarantee.
                let lead = chunk.len() - chunk.trim_start().len();
                let chunk = chunk.trim();
                if chunk.is_empty() {
                    continue;
                }
                let a = start + offset + lead;
                let b = a + chunk.len();
                if !last && (b + margin > end || text[b..end].trim().is_empty()) {
                    restart = Some(a);
                    break;
                }
                out.push((a, b, index.count_slice(chunk)));
            }
            if last {
                break;
            }
            match restart {
                Some(a) if a > start && out.len() > kept_before => {
                    start = a;
                    window = base_window;
                }
                // No chunk at all: the window holds only whitespace.
                None => {
                    start = end;
                    window = base_window;
                }
                // Not even one chunk fits well inside the window: widen it.
                Some(_) => {
                    out.truncate(kept_before);
                    window *= 2;
                }
            }
        }
    }

    /// Number of cl100k tokens in `text`, exactly as tiktoken's
    /// `encode_ordinary` counts them (special tokens counted as text).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter.count(text)
    }
}

impl Chunk {
    /// The text to embed: the chunk with its heading path in front, so a
    /// chunk deep in a section still carries its topic (the title, for
    /// Markdown documents), unless the content already starts with it,
    /// as text or as a Markdown heading line (`# Title`).
    pub fn embedding_text(&self) -> String {
        match &self.heading {
            Some(heading) if !self.starts_with(heading) => {
                format!("{heading}\n\n{}", self.content)
            }
            _ => self.content.clone(),
        }
    }

    fn starts_with(&self, heading: &str) -> bool {
        self.content.starts_with(heading)
            || self.content.lines().next().is_some_and(|first| {
                first.starts_with('#') && first.trim_start_matches('#').trim() == heading
            })
    }
}

/// Whether `text` is just the last heading of `path`, with or without
/// Markdown's `#` markup.
fn is_heading_line(text: &str, path: Option<&str>) -> bool {
    let Some(last) = path.and_then(|p| p.rsplit(" > ").next()) else {
        return false;
    };
    let line = text.trim().trim_start_matches('#').trim();
    !text.contains('\n') && !last.is_empty() && line == last.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_embedded_with_their_heading_path_in_front() {
        let chunk = |heading: Option<&str>, content: &str| Chunk {
            ordinal: 0,
            content: content.into(),
            token_count: 1,
            page: None,
            heading: heading.map(Into::into),
        };
        assert_eq!(
            chunk(Some("Trial > Dosing"), "Two doses.").embedding_text(),
            "Trial > Dosing\n\nTwo doses."
        );
        assert_eq!(
            chunk(Some("Trial"), "Trial results.").embedding_text(),
            "Trial results."
        );
        // A Markdown document's first chunk opens with its title's line.
        assert_eq!(
            chunk(Some("Trial"), "# Trial\n\nTwo doses.").embedding_text(),
            "# Trial\n\nTwo doses."
        );
        assert_eq!(
            chunk(Some("Trial > Dosing"), "## Dosing\n\nTwo doses.").embedding_text(),
            "Trial > Dosing\n\n## Dosing\n\nTwo doses."
        );
        assert_eq!(chunk(None, "Plain.").embedding_text(), "Plain.");
    }

    #[test]
    fn a_heading_split_from_its_text_is_not_a_chunk_of_its_own() {
        let body = long_text(30);
        let text = format!("# Malaria treatment\n\n{body}");
        let chunks = chunker(120, 10).chunk(&[section(&text, None, Some("Malaria treatment"))]);
        assert!(chunks.len() > 1);
        assert!(
            chunks.iter().all(|c| c.content != "# Malaria treatment"),
            "{chunks:?}"
        );
        assert_eq!(chunks[0].ordinal, 0);
        assert!(
            chunks[0].content.starts_with("Sentence number 0"),
            "{}",
            chunks[0].content
        );
        // A section that is only its heading keeps it.
        let alone = chunker(120, 10).chunk(&[section("# Empty", None, Some("Empty"))]);
        assert_eq!(alone.len(), 1);
        assert!(is_heading_line("## Methods", Some("Study > Methods")));
        assert!(!is_heading_line(
            "Methods were varied",
            Some("Study > Methods")
        ));
    }

    fn chunker(max_tokens: usize, overlap_tokens: usize) -> Chunker {
        Chunker::new(ChunkSpec {
            max_tokens,
            overlap_tokens,
        })
        .unwrap()
    }

    fn section(text: &str, page: Option<u32>, heading: Option<&str>) -> Section {
        Section {
            text: text.to_owned(),
            page,
            heading: heading.map(str::to_owned),
        }
    }

    /// tiktoken-rs's own count, the reference the chunker must agree with.
    fn reference_count(text: &str) -> usize {
        tiktoken_rs::cl100k_base_singleton()
            .encode_ordinary(text)
            .len()
    }

    /// Distinct numbered sentences, so overlaps can be located exactly.
    fn long_text(sentences: usize) -> String {
        (0..sentences)
            .map(|i| format!("Sentence number {i} talks about topic {} in detail.", i * 7))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn chunker_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Chunker>();
    }

    #[test]
    fn invalid_specs_are_rejected() {
        assert!(matches!(
            Chunker::new(ChunkSpec {
                max_tokens: 0,
                overlap_tokens: 0
            }),
            Err(ChunkError::InvalidSpec(_))
        ));
        assert!(matches!(
            Chunker::new(ChunkSpec {
                max_tokens: 100,
                overlap_tokens: 100
            }),
            Err(ChunkError::InvalidSpec(_))
        ));
    }

    #[test]
    fn count_tokens_matches_known_values() {
        let c = chunker(100, 0);
        assert_eq!(c.count_tokens(""), 0);
        assert_eq!(c.count_tokens("An apple a"), 3);
        assert_eq!(c.count_tokens("hello world"), 2);
        let mixed = "Grüße,  it's 2024!\n\n\t中文 😀 x";
        assert_eq!(c.count_tokens(mixed), reference_count(mixed));
        // Special-token text is counted as ordinary text, never rejected.
        assert!(c.count_tokens("<|endoftext|>") > 1);
    }

    #[test]
    fn chunks_respect_max_tokens_and_report_exact_counts() {
        let max = 50;
        let c = chunker(max, 10);
        let text = long_text(200);
        let chunks = c.chunk(&[section(&text, None, None)]);
        assert!(chunks.len() > 10, "only {} chunks", chunks.len());
        for ch in &chunks {
            assert!(
                ch.token_count as usize <= max,
                "chunk {} has {} tokens",
                ch.ordinal,
                ch.token_count
            );
            assert_eq!(ch.token_count as usize, reference_count(&ch.content));
            assert_eq!(ch.content, ch.content.trim());
            assert!(!ch.content.is_empty());
        }
        // Every sentence survives chunking.
        for i in 0..200 {
            let needle = format!("Sentence number {i} ");
            assert!(
                chunks.iter().any(|ch| ch.content.contains(&needle)),
                "{needle:?} missing"
            );
        }
    }

    #[test]
    fn consecutive_chunks_of_a_long_section_overlap() {
        let c = chunker(40, 15);
        let text = long_text(60);
        let chunks = c.chunk(&[section(&text, None, None)]);
        assert!(chunks.len() > 3);
        for pair in chunks.windows(2) {
            let (a, b) = (&pair[0].content, &pair[1].content);
            // The next chunk starts with text that ended the previous one.
            let shared = (1..=a.len().min(b.len()))
                .rev()
                .find(|&n| {
                    a.is_char_boundary(a.len() - n) && b.is_char_boundary(n) && a.ends_with(&b[..n])
                })
                .unwrap_or(0);
            let overlap_tokens = c.count_tokens(&b[..shared]);
            assert!(
                shared > 0 && overlap_tokens <= 15,
                "no overlap (or too much: {overlap_tokens} tokens) between\n{a:?}\nand\n{b:?}"
            );
        }
        // Without overlap nothing is repeated.
        let plain = chunker(40, 0).chunk(&[section(&text, None, None)]);
        let total: usize = plain.iter().map(|ch| ch.content.len()).sum();
        assert!(total <= text.len());
        let with_overlap: usize = chunks.iter().map(|ch| ch.content.len()).sum();
        assert!(with_overlap > text.len());
    }

    #[test]
    fn locators_and_ordinals_are_kept_across_sections() {
        let c = chunker(30, 5);
        let sections = vec![
            section(&long_text(20), Some(1), None),
            section("   \n  ", Some(2), None),
            section("Short page three.", Some(3), Some("A > B")),
            section(&long_text(15), None, Some("A > C")),
        ];
        let chunks = c.chunk(&sections);
        for (i, ch) in chunks.iter().enumerate() {
            assert_eq!(ch.ordinal, i as i32);
        }
        let short = chunks
            .iter()
            .find(|ch| ch.content == "Short page three.")
            .expect("short section kept whole");
        assert_eq!(short.page, Some(3));
        assert_eq!(short.heading.as_deref(), Some("A > B"));
        // Chunks follow section order and never mix locators.
        let locs: Vec<(Option<i32>, Option<&str>)> = chunks
            .iter()
            .map(|ch| (ch.page, ch.heading.as_deref()))
            .collect();
        let first_b = locs
            .iter()
            .position(|l| *l == (Some(3), Some("A > B")))
            .unwrap();
        assert!(first_b > 1);
        assert!(locs[..first_b].iter().all(|l| *l == (Some(1), None)));
        assert_eq!(locs[first_b + 1], (None, Some("A > C")));
        assert!(
            locs[first_b + 1..]
                .iter()
                .all(|l| *l == (None, Some("A > C")))
        );
        assert!(!locs.contains(&(Some(2), None)));
    }

    /// Paragraphs, lines and sentences of varying length, well over one window.
    fn varied_text(bytes: usize) -> String {
        let mut text = String::new();
        let mut i = 0usize;
        while text.len() < bytes {
            text.push_str(&format!("Line {i} says {} things", i % 13));
            text.push_str(match i % 7 {
                0 => ".\n\n",
                1 | 4 => ". ",
                2 => "\n",
                3 => "; and then\n",
                5 => " — €uro ünïcode 中文!\n\n\n",
                _ => " ",
            });
            i += 1;
        }
        text
    }

    #[test]
    fn windowed_split_matches_a_single_pass() {
        for (max, overlap) in [(100, 20), (40, 0), (300, 100)] {
            let c = chunker(max, overlap);
            let text = varied_text(300 * 1024);
            let index = c.counter.index(&text);
            let mut windowed = Vec::new();
            c.split(&text, &mut windowed);
            let config = ChunkConfig::new(max)
                .with_overlap(overlap)
                .unwrap()
                .with_sizer(&index);
            let single: Vec<(usize, usize, usize)> = TextSplitter::new(config)
                .chunk_indices(&text)
                .map(|(offset, chunk)| (offset, offset + chunk.len(), reference_count(chunk)))
                .collect();
            assert!(single.len() > 100);
            assert_eq!(windowed.len(), single.len(), "max {max} overlap {overlap}");
            assert!(windowed == single, "max {max} overlap {overlap}");
        }
    }

    #[test]
    fn empty_input_gives_no_chunks() {
        let c = chunker(30, 0);
        assert!(c.chunk(&[]).is_empty());
        assert!(c.chunk(&[section("\n\n ", None, None)]).is_empty());
    }

    #[test]
    fn extracted_pdf_chunks_keep_page_numbers() {
        let pdf =
            crate::extract::tests::pdf_with_pages(&[&["Alpha page text"], &["Beta page text"]]);
        let sections = crate::extract::extract(&pdf, crate::extract::Format::Pdf).unwrap();
        let chunks = chunker(100, 10).chunk(&sections);
        let got: Vec<(i32, Option<i32>, &str)> = chunks
            .iter()
            .map(|ch| (ch.ordinal, ch.page, ch.content.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Some(1), "Alpha page text"),
                (1, Some(2), "Beta page text")
            ]
        );
    }

    /// Throughput of extraction + chunking; run with
    /// `cargo test -p extraction --release -- --ignored --nocapture throughput`.
    #[test]
    #[ignore = "benchmark; run in release mode"]
    fn throughput() {
        const WORDS: &[&str] = &[
            "the",
            "retrieval",
            "of",
            "documents",
            "is",
            "based",
            "on",
            "embeddings",
            "and",
            "a",
            "tenant",
            "may",
            "upload",
            "files",
            "which",
            "are",
            "split",
            "into",
            "chunks",
            "with",
            "overlap",
            "so",
            "that",
            "context",
            "survives",
            "boundaries",
            "between",
            "paragraphs",
            "sentences",
            "words",
            "quickly",
            "measured",
            "throughput",
            "per",
            "second",
            "in",
            "release",
            "mode",
            "on",
            "one",
            "core",
            "results",
            "vary",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut text = String::new();
        let mut paragraph = 0;
        while text.len() < 20 << 20 {
            if paragraph % 25 == 0 {
                text.push_str(&format!("## Heading {paragraph}\n\n"));
            }
            for _ in 0..(3 + next() % 6) {
                for w in 0..(6 + next() % 20) {
                    if w > 0 {
                        text.push(' ');
                    }
                    text.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                }
                text.push_str(". ");
            }
            text.push_str("\n\n");
            paragraph += 1;
        }
        let start = std::time::Instant::now();
        let c = chunker(512, 64);
        println!(
            "Chunker::new: {:.0} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        let csv = {
            let mut csv = String::from("id,name,city,comment\n");
            let mut i = 0;
            while csv.len() < 20 << 20 {
                csv.push_str(&format!(
                    "{i},Person {i},\"City, {}\",{}\n",
                    i % 97,
                    &text[i * 40 % (1 << 20)..][..60].replace(['\n', '"', ','], " ")
                ));
                i += 1;
            }
            csv
        };
        let html = {
            let mut html = String::from("<html><head><title>t</title></head><body>\n");
            for block in text.split("\n\n") {
                match block.strip_prefix("## ") {
                    Some(h) => html.push_str(&format!("<h2>{h}</h2>\n")),
                    None => html.push_str(&format!("<p>{block}</p>\n")),
                }
            }
            html.push_str("</body></html>");
            html
        };
        let one_line = text.replace('\n', " ");
        let inputs = [
            (crate::extract::Format::PlainText, &text),
            (crate::extract::Format::Markdown, &text),
            (crate::extract::Format::Csv, &csv),
            (crate::extract::Format::Html, &html),
            (crate::extract::Format::PlainText, &one_line),
        ];
        let only = std::env::var("BENCH_ONLY").ok();
        for (i, (format, input)) in inputs.into_iter().enumerate() {
            if only.as_ref().is_some_and(|o| *o != i.to_string()) {
                continue;
            }
            let start = std::time::Instant::now();
            let sections = crate::extract::extract(input.as_bytes(), format).unwrap();
            let extracted = start.elapsed();
            let chunks = c.chunk(&sections);
            let total = start.elapsed();
            let mb = input.len() as f64 / (1 << 20) as f64;
            println!(
                "{format:?}: {mb:.1} MB, {} sections, {} chunks; extract {:.0} ms, total {:.0} ms = {:.1} MB/s",
                sections.len(),
                chunks.len(),
                extracted.as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e3,
                mb / total.as_secs_f64()
            );
        }
        if only.is_some() {
            return;
        }
        let start = std::time::Instant::now();
        let tokens = c.count_tokens(&text);
        println!(
            "count_tokens: {tokens} tokens, {:.1} MB/s",
            text.len() as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
        );
        let start = std::time::Instant::now();
        let reference = reference_count(&text);
        println!(
            "tiktoken-rs encode_ordinary: {reference} tokens, {:.1} MB/s",
            text.len() as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
        );
        assert_eq!(tokens, reference);
    }
}
