//! Fast, exact `cl100k_base` token counting.
//!
//! tiktoken-rs splits text with a `fancy-regex` pattern, which runs at about
//! 20 MB/s, and text-splitter sizes each candidate chunk from scratch, so
//! chunking a document costs many full tokenizations. This module gives the
//! same counts much faster:
//!
//! - [`Counter`] replaces the regex with a hand-written scanner for the
//!   cl100k pre-tokenization pattern (character classes taken from
//!   `regex-syntax`, the tables the regex engine itself uses) and runs
//!   tiktoken-rs's own byte-pair merge on each piece with the same ranks.
//! - [`Indexed`] pre-tokenizes one section once and keeps prefix sums of
//!   token counts, so the count of any substring is the prefix-sum
//!   difference plus a re-scan of the few pieces at its edges whose scan
//!   looked at text outside the substring. It is exact, not an estimate.
//!
//! The tests compare both against `CoreBPE::encode_ordinary` on random text.

use std::sync::Arc;

use regex_syntax::hir::{Class, HirKind};
use rustc_hash::FxHashMap;
use tiktoken_rs::{CoreBPE, Rank};

/// Longest piece: a scan stops this far from its start as if the text
/// ended there. Without it one long run of letters (a megabyte without a
/// space) is one piece, and every candidate chunk ending inside it
/// re-tokenizes it from its start. Text of ordinary words never has such
/// pieces, so counts stay exactly tiktoken's; those runs are counted in
/// parts, a little over their exact count.
const MAX_PIECE: usize = 64;

/// Pieces at least this long go to tiktoken-rs itself, whose merge is
/// O(n log n) for long pieces (the quick merge is quadratic).
const LONG_PIECE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cls {
    Letter,
    Number,
    Space,
    Other,
}

/// Exact cl100k token counter (ordinary text: special tokens are plain text).
pub(super) struct Counter {
    bpe: Arc<CoreBPE>,
    ranks: FxHashMap<Vec<u8>, Rank>,
    ascii: [Cls; 128],
    /// Non-overlapping, sorted `(first, last, class)` code point ranges for
    /// `\p{L}`, `\p{N}` and `\s`; everything else is `Other`.
    ranges: Vec<(u32, u32, Cls)>,
}

impl Counter {
    pub(super) fn new(bpe: Arc<CoreBPE>) -> Result<Self, String> {
        let mut ranks = FxHashMap::default();
        ranks.reserve(100_256);
        // cl100k's ordinary tokens are ranks 0..100256; specials start above.
        for rank in 0..100_256 {
            if let Ok(bytes) = bpe.decode_bytes(&[rank]) {
                ranks.insert(bytes, rank);
            }
        }
        if ranks.len() < 100_000 {
            return Err(format!("only {} token ranks found", ranks.len()));
        }
        let mut ranges = Vec::new();
        for (pattern, cls) in [
            (r"\p{L}", Cls::Letter),
            (r"\p{N}", Cls::Number),
            (r"\s", Cls::Space),
        ] {
            let hir = regex_syntax::parse(pattern).map_err(|e| e.to_string())?;
            let HirKind::Class(Class::Unicode(class)) = hir.kind() else {
                return Err(format!("{pattern} is not a Unicode class"));
            };
            ranges.extend(
                class
                    .ranges()
                    .iter()
                    .map(|r| (u32::from(r.start()), u32::from(r.end()), cls)),
            );
        }
        ranges.sort_unstable_by_key(|r| r.0);
        if ranges.windows(2).any(|w| w[0].1 >= w[1].0) {
            return Err("character classes overlap".into());
        }
        let mut counter = Self {
            bpe,
            ranks,
            ascii: [Cls::Other; 128],
            ranges,
        };
        for b in 0u8..128 {
            counter.ascii[usize::from(b)] = counter.class_slow(char::from(b));
        }
        Ok(counter)
    }

    fn class_slow(&self, c: char) -> Cls {
        let c = u32::from(c);
        let i = self.ranges.partition_point(|r| r.1 < c);
        match self.ranges.get(i) {
            Some(&(first, _, cls)) if first <= c => cls,
            _ => Cls::Other,
        }
    }

    #[inline]
    fn class(&self, c: char) -> Cls {
        if c.is_ascii() {
            self.ascii[c as usize]
        } else {
            self.class_slow(c)
        }
    }

    /// Exact number of tokens `encode_ordinary(text)` would return.
    pub(super) fn count(&self, text: &str) -> usize {
        let mut pos = 0;
        let mut total = 0;
        while pos < text.len() {
            let (end, _) = self.piece(text, pos);
            total += self.piece_tokens(&text[pos..end]);
            pos = end;
        }
        total
    }

    /// Pre-tokenizes `text` once so substrings of it can be counted quickly.
    pub(super) fn index<'t>(&'t self, text: &'t str) -> Indexed<'t> {
        let estimate = text.len() / 4 + 1;
        let mut starts = Vec::with_capacity(estimate);
        let mut reach_max = Vec::with_capacity(estimate);
        let mut cumulative = Vec::with_capacity(estimate + 1);
        cumulative.push(0u32);
        let (mut pos, mut max, mut total) = (0usize, 0usize, 0u32);
        while pos < text.len() {
            let (end, reach) = self.piece(text, pos);
            max = max.max(reach);
            starts.push(pos);
            reach_max.push(max);
            total = total.saturating_add(self.piece_tokens(&text[pos..end]) as u32);
            cumulative.push(total);
            pos = end;
        }
        starts.push(text.len());
        Indexed {
            counter: self,
            text,
            starts,
            reach_max,
            cumulative,
        }
    }

    /// Tokens in one pre-tokenized piece.
    fn piece_tokens(&self, piece: &str) -> usize {
        let bytes = piece.as_bytes();
        if bytes.len() <= 1 || self.ranks.contains_key(bytes) {
            bytes.len().min(1)
        } else if bytes.len() < LONG_PIECE {
            tiktoken_rs::byte_pair_split(bytes, &self.ranks).len()
        } else {
            self.bpe.encode_ordinary(piece).len()
        }
    }

    /// The piece starting at byte `start` of `s` under the cl100k pattern
    ///
    /// `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|
    ///  ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`
    ///
    /// as `(end, reach)`: `reach` bounds the bytes the scan looked at
    /// (`s.len() + 1` if it looked at the end of the text), so the same
    /// piece results in any text that agrees with `s` on `start..reach`.
    fn piece(&self, s: &str, start: usize) -> (usize, usize) {
        let mut cur = Cursor {
            s,
            reach: start,
            limit: start + MAX_PIECE,
        };
        let end = self.scan(&mut cur, start);
        (end, cur.reach)
    }

    fn scan(&self, cur: &mut Cursor<'_>, start: usize) -> usize {
        let Some((c0, p1)) = cur.at(start) else {
            return start;
        };
        let k0 = self.class(c0);
        // '(?i:[sdmt]|ll|ve|re)
        if c0 == '\''
            && let Some((c1, p2)) = cur.at(p1)
        {
            if matches!(
                c1,
                's' | 'S' | '\u{17F}' | 'd' | 'D' | 'm' | 'M' | 't' | 'T'
            ) {
                return p2;
            }
            if let Some((c2, p3)) = cur.at(p2) {
                let (a, b) = (c1.to_ascii_lowercase(), c2.to_ascii_lowercase());
                if c1.is_ascii()
                    && c2.is_ascii()
                    && matches!((a, b), ('l', 'l') | ('v', 'e') | ('r', 'e'))
                {
                    return p3;
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?+\p{L}++
        if k0 == Cls::Letter {
            return self.skip(cur, p1, Cls::Letter);
        }
        if c0 != '\r'
            && c0 != '\n'
            && k0 != Cls::Number
            && let Some((c1, p2)) = cur.at(p1)
            && self.class(c1) == Cls::Letter
        {
            return self.skip(cur, p2, Cls::Letter);
        }
        // \p{N}{1,3}+
        if k0 == Cls::Number {
            let mut pos = p1;
            for _ in 0..2 {
                match cur.at(pos) {
                    Some((c, next)) if self.class(c) == Cls::Number => pos = next,
                    _ => break,
                }
            }
            return pos;
        }
        // ' ?[^\s\p{L}\p{N}]++[\r\n]*+'
        let others_from = if k0 == Cls::Other {
            Some(p1)
        } else if c0 == ' ' {
            match cur.at(p1) {
                Some((c1, p2)) if self.class(c1) == Cls::Other => Some(p2),
                _ => None,
            }
        } else {
            None
        };
        if let Some(pos) = others_from {
            let mut pos = self.skip(cur, pos, Cls::Other);
            while let Some((c, next)) = cur.at(pos) {
                if c != '\r' && c != '\n' {
                    break;
                }
                pos = next;
            }
            return pos;
        }
        // c0 is whitespace: \s++$ | \s*[\r\n] | \s+(?!\S) | \s
        debug_assert_eq!(k0, Cls::Space);
        let (mut pos, mut last_start, mut after_newline, mut chars) = (p1, start, None, 1usize);
        if c0 == '\r' || c0 == '\n' {
            after_newline = Some(p1);
        }
        loop {
            match cur.at(pos) {
                Some((c, next)) if self.class(c) == Cls::Space => {
                    if c == '\r' || c == '\n' {
                        after_newline = Some(next);
                    }
                    last_start = pos;
                    pos = next;
                    chars += 1;
                }
                Some(_) => break,
                None => return pos,
            }
        }
        if let Some(end) = after_newline {
            end
        } else if chars >= 2 {
            last_start
        } else {
            p1
        }
    }

    /// Skips characters of class `cls` from `pos`.
    fn skip(&self, cur: &mut Cursor<'_>, mut pos: usize, cls: Cls) -> usize {
        while let Some((c, next)) = cur.at(pos) {
            if self.class(c) != cls {
                break;
            }
            pos = next;
        }
        pos
    }
}

/// Reads characters and remembers how far it read.
struct Cursor<'s> {
    s: &'s str,
    reach: usize,
    /// Where the scan takes the text to end ([`MAX_PIECE`]).
    limit: usize,
}

impl Cursor<'_> {
    /// The character at byte `pos` and the position after it.
    #[inline]
    fn at(&mut self, pos: usize) -> Option<(char, usize)> {
        let bytes = self.s.as_bytes();
        if pos >= self.limit && pos < bytes.len() {
            self.reach = self.reach.max(self.limit);
            return None;
        }
        match bytes.get(pos) {
            None => {
                self.reach = self.reach.max(self.s.len() + 1);
                None
            }
            Some(&b) if b < 0x80 => {
                self.reach = self.reach.max(pos + 1);
                Some((char::from(b), pos + 1))
            }
            Some(_) => {
                let c = self.s[pos..].chars().next()?;
                let next = pos + c.len_utf8();
                self.reach = self.reach.max(next);
                Some((c, next))
            }
        }
    }
}

/// One text pre-tokenized, with prefix sums of token counts.
pub(super) struct Indexed<'t> {
    counter: &'t Counter,
    text: &'t str,
    /// Start of each piece, then `text.len()`.
    starts: Vec<usize>,
    /// Running maximum of each piece's scan reach.
    reach_max: Vec<usize>,
    /// Tokens in pieces `0..i`.
    cumulative: Vec<u32>,
}

impl Indexed<'_> {
    /// Exact token count of `text[a..b]` (char boundaries).
    pub(super) fn count_range(&self, a: usize, b: usize) -> usize {
        let t = &self.text[..b];
        let c = self.counter;
        let mut total = 0usize;
        let mut pos = a;
        // Head: re-scan until the scan falls onto a piece start of the full
        // text; from there the pieces are the same.
        let first = loop {
            if pos >= b {
                return total;
            }
            if let Ok(k) = self.starts.binary_search(&pos) {
                break k;
            }
            let (end, _) = c.piece(t, pos);
            total += c.piece_tokens(&t[pos..end]);
            pos = end;
        };
        // Middle: pieces whose scans never looked at `b` or beyond.
        let last = self.reach_max.partition_point(|&r| r <= b);
        if last > first {
            total += (self.cumulative[last] - self.cumulative[first]) as usize;
            pos = self.starts[last];
        }
        // Tail: pieces cut or influenced by the end of the substring.
        while pos < b {
            let (end, _) = c.piece(t, pos);
            total += c.piece_tokens(&t[pos..end]);
            pos = end;
        }
        total
    }

    /// Token count of `slice`, which is normally a subslice of the indexed
    /// text (then it is fast); any other string is counted from scratch.
    pub(super) fn count_slice(&self, slice: &str) -> usize {
        let base = self.text.as_ptr() as usize;
        let start = (slice.as_ptr() as usize).wrapping_sub(base);
        if start <= self.text.len() && self.text.len() - start >= slice.len() {
            self.count_range(start, start + slice.len())
        } else {
            self.counter.count(slice)
        }
    }
}

impl text_splitter::ChunkSizer for Indexed<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.count_slice(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> Counter {
        Counter::new(Arc::new(tiktoken_rs::cl100k_base().unwrap())).unwrap()
    }

    /// Characters that exercise every branch of the pattern.
    const ALPHABET: &[&str] = &[
        "a", "b", "Z", "é", "ж", "中", "ſ", "s", "S", "t", "l", "L", "v", "e", "E", "r", "d", "M",
        "'", "'s", "'ll", "'Ve", "'RE", "'ſ", "0", "7", "٣", "½", "Ⅻ", " ", " ", " ", "  ", "\t",
        "\n", "\r", "\r\n", "\n\n", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}", "\u{b}", ".", ",",
        "!", "?", "-", "(", ")", "\"", "#", "$", "%", "&", "*", "/", "\\", "_", "\u{301}", "😀",
        "👍🏽", "ñ", "Ω", "ß", "ﬁ", "\u{200b}", "\u{feff}",
    ];

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_text(rng: &mut Rng, pieces: usize) -> String {
        (0..pieces)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect()
    }

    #[test]
    fn counts_equal_tiktoken_on_fixed_samples() {
        let c = counter();
        let bpe = tiktoken_rs::cl100k_base().unwrap();
        for text in [
            "",
            "hello world",
            "Hello, World! It's 2024 and we're here.",
            "  leading and trailing  ",
            "tabs\tand\nnewlines\r\n\r\n  indented\n",
            "numbers 1234567 3.14159 1,000,000",
            "I'LL they'Ve she'S 'ſ don't",
            "  \n  \n\t x",
            "Grüße aus Köln — 中文文本 😀 ñandú",
            "<|endoftext|> is plain text here",
            "a    b",
            "   ",
            "x\n",
            &"word ".repeat(300),
            &"x".repeat(MAX_PIECE),
            &" ".repeat(MAX_PIECE),
        ] {
            assert_eq!(
                c.count(text),
                bpe.encode_ordinary(text).len(),
                "mismatch for {text:?}"
            );
        }
    }

    #[test]
    fn runs_longer_than_a_piece_are_counted_in_parts_never_under() {
        let c = counter();
        let bpe = tiktoken_rs::cl100k_base().unwrap();
        for text in [
            "x".repeat(5_000),
            " ".repeat(1_000),
            "abcdefghij".repeat(500),
            format!("see {} here", "ACGT".repeat(400)),
        ] {
            let (ours, exact) = (c.count(&text), bpe.encode_ordinary(&text).len());
            assert!(
                ours >= exact && ours <= 2 * exact + 1,
                "{ours} against {exact} for a run of {} bytes",
                text.len()
            );
        }
    }

    #[test]
    fn counts_equal_tiktoken_on_random_text() {
        let c = counter();
        let bpe = tiktoken_rs::cl100k_base().unwrap();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3_000 {
            let len = 1 + rng.below(40);
            let text = random_text(&mut rng, len);
            assert_eq!(
                c.count(&text),
                bpe.encode_ordinary(&text).len(),
                "mismatch for {text:?}"
            );
        }
    }

    #[test]
    fn substring_counts_equal_tiktoken() {
        let c = counter();
        let bpe = tiktoken_rs::cl100k_base().unwrap();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..40 {
            let text = random_text(&mut rng, 150);
            let index = c.index(&text);
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            assert_eq!(
                index.count_range(0, text.len()),
                bpe.encode_ordinary(&text).len()
            );
            for _ in 0..60 {
                let mut a = bounds[rng.below(bounds.len())];
                let mut b = bounds[rng.below(bounds.len())];
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                let sub = &text[a..b];
                assert_eq!(
                    index.count_slice(sub),
                    bpe.encode_ordinary(sub).len(),
                    "mismatch for {sub:?} ({a}..{b}) of {text:?}"
                );
            }
        }
        // A string that is not part of the indexed text is counted directly.
        let text = "indexed text";
        let index = c.index(text);
        assert_eq!(index.count_slice("other words here"), 3);
    }
}
