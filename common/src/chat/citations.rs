//! Citation markers in answers: `[1]`, `[1, 3]`, `[1][2]`, `[1-3]`.
//!
//! Every provider runs its answer through [`resolve`]: markers are kept
//! only for numbers of sources the model was given, rewritten in the
//! canonical form `[1]` / `[1, 3]`, and any other number is removed from
//! the text, so an answer never cites a passage it was not given.

use std::fmt::Write as _;

/// Longest marker looked at, brackets excluded; longer bracketed text is
/// prose, and the bound keeps scanning linear.
const MAX_MARKER_BYTES: usize = 64;

/// `answer` with its markers resolved against `valid` (the numbers of the
/// given sources), and the valid numbers it cites, in order of first
/// mention, without duplicates. Brackets holding anything but numbers,
/// ranges, commas, semicolons and spaces are left alone.
pub(crate) fn resolve(answer: &str, valid: &[usize]) -> (String, Vec<usize>) {
    let mut sorted_valid = valid.to_vec();
    sorted_valid.sort_unstable();
    sorted_valid.dedup();
    let (out, cited) = rewrite(answer, &sorted_valid, |_, n| n);
    (out.trim().to_owned(), cited)
}

/// Rewrites an answer's resolved markers from source numbers to citation
/// numbers: `cited` lists source numbers in citation order, so source
/// `cited[i]` becomes `[i + 1]`; a marker naming none of them is removed.
/// The same marker grammar as [`resolve`], so text it left alone stays.
pub(crate) fn renumber(answer: &str, cited: &[usize]) -> String {
    rewrite(answer, cited, |i, _| i + 1).0.trim().to_owned()
}

/// Each marker of `answer` rewritten to `label(i, n)` for every entry
/// `n = candidates[i]` its ranges name (in range order, then candidate
/// order, without duplicates), or removed when it names none; with the
/// candidates cited, in order of first mention.
fn rewrite(
    answer: &str,
    candidates: &[usize],
    label: impl Fn(usize, usize) -> usize,
) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(answer.len());
    let mut cited: Vec<usize> = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let marker = after
            .bytes()
            .take(MAX_MARKER_BYTES + 1)
            .position(|b| b == b']')
            .and_then(|close| parse_marker(&after[..close]).map(|ranges| (close, ranges)));
        let Some((close, ranges)) = marker else {
            out.push('[');
            rest = after;
            continue;
        };
        rest = &after[close + 1..];

        let mut kept: Vec<usize> = Vec::new();
        for (lo, hi) in ranges {
            for (i, &n) in candidates.iter().enumerate() {
                if lo <= n && n <= hi && !kept.contains(&i) {
                    kept.push(i);
                }
            }
        }
        if kept.is_empty() {
            rest = remove_marker(&mut out, rest);
            continue;
        }
        out.push('[');
        for (k, &i) in kept.iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}", label(i, candidates[i]));
            if !cited.contains(&candidates[i]) {
                cited.push(candidates[i]);
            }
        }
        out.push(']');
    }
    out.push_str(rest);
    (out, cited)
}

/// Inclusive ranges named by a marker's inside (`1`, `1, 3`, `1-3`,
/// `2–4`), or `None` if it is not a citation. Numbers too large for
/// `usize` become `usize::MAX`: out of range, so removed.
fn parse_marker(inner: &str) -> Option<Vec<(usize, usize)>> {
    if inner.trim().is_empty() {
        return None;
    }
    inner
        .split([',', ';'])
        .map(|part| {
            let part = part.trim();
            match part.split_once(['-', '–']) {
                Some((a, b)) => {
                    let (a, b) = (number(a.trim())?, number(b.trim())?);
                    Some((a.min(b), a.max(b)))
                }
                None => number(part).map(|n| (n, n)),
            }
        })
        .collect()
}

fn number(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(usize::MAX))
}

/// Drops a removed marker's surrounding space so no gap is left before
/// punctuation or at a line start ("Paris [9]." → "Paris."). Returns the
/// rest of the text to scan.
fn remove_marker<'a>(out: &mut String, rest: &'a str) -> &'a str {
    let next = rest.chars().next();
    if next.is_none_or(|c| c.is_whitespace() || ".,;:!?)".contains(c)) {
        let kept = out.trim_end_matches([' ', '\t']).len();
        out.truncate(kept);
    }
    if out.is_empty() || out.ends_with('\n') {
        rest.trim_start_matches([' ', '\t'])
    } else {
        rest
    }
}

/// [`resolve`] for an answer that arrives in pieces: text is passed on
/// as soon as resolving it alone gives what resolving the whole answer
/// would. A `[` whose `]` has not come yet, a marker not yet followed by
/// anything, and the spaces before either are held back (a marker's
/// length at most); removing a marker may take the spaces around it, so
/// each part is resolved after the last character passed on. The numbers
/// cited so far accumulate in order of first mention.
pub struct MarkerFilter {
    valid: Vec<usize>,
    held: String,
    last: Option<char>,
    cited: Vec<usize>,
}

impl MarkerFilter {
    pub fn new(valid: &[usize]) -> Self {
        let mut valid = valid.to_vec();
        valid.sort_unstable();
        valid.dedup();
        Self {
            valid,
            held: String::new(),
            last: None,
            cited: Vec::new(),
        }
    }

    /// The text of `piece` (and of pieces held before it) that can be
    /// passed on now; empty while a marker may still be open.
    pub fn push(&mut self, piece: &str) -> String {
        self.held.push_str(piece);
        let mut cut = self.held.len();
        if let Some(open) = self.held.rfind('[')
            && self.held.len() - open <= MAX_MARKER_BYTES + 2
        {
            let tail = &self.held[open..];
            // Open, or closed at the very end: its next character decides
            // what removing it does to the spaces around.
            if !tail.contains(']') || tail.ends_with(']') {
                cut = open;
            }
        }
        // Trailing space may yet be removed with a marker, or end the answer.
        cut = self.held[..cut].trim_end().len();
        let ready: String = self.held.drain(..cut).collect();
        self.resolve(&ready)
    }

    /// Whatever is still held, at the end of the answer (which, like a
    /// resolved one, ends without space).
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        self.resolve(&rest).trim_end().to_owned()
    }

    /// The valid numbers cited so far, in order of first mention.
    pub fn cited(&self) -> &[usize] {
        &self.cited
    }

    fn resolve(&mut self, text: &str) -> String {
        if text.is_empty() {
            return String::new();
        }
        let mut context = String::with_capacity(text.len() + 4);
        context.extend(self.last);
        context.push_str(text);
        let (out, cited) = rewrite(&context, &self.valid, |_, n| n);
        let out = match self.last {
            Some(c) if out.starts_with(c) => out[c.len_utf8()..].to_owned(),
            Some(_) => out,
            // The answer starts without space, like a resolved one.
            None => out.trim_start().to_owned(),
        };
        for n in cited {
            if !self.cited.contains(&n) {
                self.cited.push(n);
            }
        }
        if let Some(c) = out.chars().next_back() {
            self.last = Some(c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(answer: &str, sources: usize, want: &str, want_cited: &[usize]) {
        let valid: Vec<usize> = (1..=sources).collect();
        let (text, cited) = resolve(answer, &valid);
        assert_eq!(text, want, "text of {answer:?}");
        assert_eq!(cited, want_cited, "cited of {answer:?}");
    }

    #[test]
    fn single_markers_in_range_are_kept() {
        check(
            "Paris is the capital [1].",
            2,
            "Paris is the capital [1].",
            &[1],
        );
        check(
            "Berlin[2], then Paris [1].",
            2,
            "Berlin[2], then Paris [1].",
            &[2, 1],
        );
    }

    #[test]
    fn lists_are_kept_in_canonical_form() {
        check("Both [1, 2].", 3, "Both [1, 2].", &[1, 2]);
        check("Both [2,1].", 3, "Both [2, 1].", &[2, 1]);
        check("Both [ 3 ;1 ].", 3, "Both [3, 1].", &[3, 1]);
        check("Twice [2, 2].", 3, "Twice [2].", &[2]);
    }

    #[test]
    fn adjacent_markers_are_separate_citations() {
        check("Both [1][2].", 2, "Both [1][2].", &[1, 2]);
        check("Both [1][3].", 2, "Both [1].", &[1]);
        check("Both [3][1].", 2, "Both [1].", &[1]);
    }

    #[test]
    fn ranges_expand_to_the_given_sources() {
        check("All [1-3].", 3, "All [1, 2, 3].", &[1, 2, 3]);
        check("Some [2–5].", 3, "Some [2, 3].", &[2, 3]);
        check("Reversed [3-2].", 3, "Reversed [2, 3].", &[2, 3]);
        check("Huge [1-18446744073709551616].", 2, "Huge [1, 2].", &[1, 2]);
        check("None [4-9].", 3, "None.", &[]);
    }

    #[test]
    fn out_of_range_numbers_are_removed_from_the_text() {
        check("Paris [7].", 2, "Paris.", &[]);
        check("Paris [7] is old [1].", 2, "Paris is old [1].", &[1]);
        check("Paris[7] is old.", 2, "Paris is old.", &[]);
        check("Mixed [1, 7, 2].", 2, "Mixed [1, 2].", &[1, 2]);
        check("Zero [0].", 2, "Zero.", &[]);
        check("Overflow [99999999999999999999999].", 2, "Overflow.", &[]);
        check(
            "[9] Paris.\n[9] Berlin [2].",
            2,
            "Paris.\nBerlin [2].",
            &[2],
        );
        check("Nothing given [1].", 0, "Nothing given.", &[]);
    }

    #[test]
    fn first_mention_order_without_duplicates() {
        check(
            "A [2]. B [1, 2]. C [2][1]. D [3].",
            3,
            "A [2]. B [1, 2]. C [2][1]. D [3].",
            &[2, 1, 3],
        );
    }

    #[test]
    fn brackets_that_are_not_markers_are_left_alone() {
        for text in [
            "An array a[i] and a list [a, b].",
            "Empty [] and blank [ ] and [1a] and [-] and [1-].",
            "Unclosed [1 and ] stray.",
            "Nested [[x]] text.",
            "Ünïcode [ß] → fine.",
        ] {
            check(text, 3, text, &[]);
        }
        let long = format!("[{}]", "1, ".repeat(40) + "1");
        check(&long, 3, &long, &[]);
    }

    #[test]
    fn nested_digits_still_resolve() {
        check("Nested [[1]].", 2, "Nested [[1]].", &[1]);
    }

    #[test]
    fn valid_numbers_are_the_given_ones() {
        let (text, cited) = resolve("A [2] B [5] C [3].", &[5, 2]);
        assert_eq!(text, "A [2] B [5] C.");
        assert_eq!(cited, [2, 5]);
    }
    #[test]
    fn a_streamed_answer_resolves_like_a_whole_one() {
        let answer = "Paris is the capital [1]. Lyon is not [2, 9]. Nowhere [7]. A [8] B \
                      [9]\nC [x] and [3][1]. End [2]";
        let valid = [1, 2, 3];
        let (whole, cited) = resolve(answer, &valid);
        // Every split into pieces, down to single characters.
        for size in [1, 2, 3, 5, 8, 13, answer.len()] {
            let mut filter = MarkerFilter::new(&valid);
            let mut streamed = String::new();
            let chars: Vec<char> = answer.chars().collect();
            for piece in chars.chunks(size) {
                streamed.push_str(&filter.push(&piece.iter().collect::<String>()));
            }
            streamed.push_str(&filter.finish());
            assert_eq!(streamed, whole, "pieces of {size}");
            assert_eq!(filter.cited(), cited.as_slice(), "pieces of {size}");
        }
        let mut filter = MarkerFilter::new(&valid);
        let parts: Vec<String> = "B [9]\nC"
            .chars()
            .map(|c| filter.push(&c.to_string()))
            .collect();
        assert_eq!(parts.concat() + &filter.finish(), "B\nC", "{parts:?}");
        // An unclosed bracket is not held for ever.
        let mut filter = MarkerFilter::new(&valid);
        let long = format!("[{}", "a".repeat(100));
        assert_eq!(filter.push(&long), long);
    }
}
