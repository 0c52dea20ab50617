//! Sentence boundaries, shared by the extractive answerer and the study
//! tools (which clean and keep the pieces each its own way).

/// Calls `piece` with each sentence of `text` as written: lines split
/// after `.`, `!` or `?` followed by a space or the line's end (the rest
/// of a line is a piece too, possibly empty).
pub fn split(text: &str, mut piece: impl FnMut(&str)) {
    for line in text.lines() {
        let mut start = 0;
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let ends = matches!(c, '.' | '!' | '?')
                && chars.peek().is_none_or(|&(_, next)| next.is_whitespace());
            if ends {
                let end = i + c.len_utf8();
                piece(&line[start..end]);
                start = end;
            }
        }
        piece(&line[start..]);
    }
}
