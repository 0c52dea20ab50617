//! CSV: one `header: value` line per row.

use std::fmt::Write as _;

use super::{ExtractError, Section};

/// Each data row becomes a line `"header1: value1; header2: value2"` (empty
/// values omitted, newlines inside values turned into spaces). The delimiter
/// (`,` `;` or tab) is guessed from the first line.
pub(super) fn csv_sections(text: &str) -> Result<Vec<Section>, ExtractError> {
    let delimiter = sniff_delimiter(text);
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let headers: Vec<String> = match records.next() {
        Some(Ok(r)) if r.len() > CSV_MAX_COLUMNS => {
            return Err(ExtractError::CsvTooWide(CSV_MAX_COLUMNS));
        }
        Some(r) => r
            .map_err(|e| ExtractError::Csv(e.to_string()))?
            .iter()
            .map(|h| one_line(h.trim()))
            .collect(),
        None => return Ok(Vec::new()),
    };
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut rows = 0usize;
    for record in records {
        let record = record.map_err(|e| ExtractError::Csv(e.to_string()))?;
        let start = out.len();
        for (i, value) in record.iter().enumerate() {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            if out.len() > start {
                out.push_str("; ");
            }
            match headers.get(i).filter(|h| !h.is_empty()) {
                Some(h) => out.push_str(h),
                None => {
                    let _ = write!(out, "column {}", i + 1);
                }
            }
            out.push_str(": ");
            push_one_line(&mut out, value);
        }
        if out.len() > start {
            out.push('\n');
            rows += 1;
        }
    }
    if rows == 0 {
        // Only a header row: its names are the only text there is.
        out = headers
            .iter()
            .filter(|h| !h.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
    }
    Ok(vec![Section {
        text: out.trim_end().to_owned(),
        page: None,
        heading: None,
    }])
}

/// Most columns read from a CSV: each row becomes `header: value` pairs,
/// and a million columns only make one endless line.
const CSV_MAX_COLUMNS: usize = 10_000;

fn sniff_delimiter(text: &str) -> u8 {
    let first = text.split('\n').next().unwrap_or_default();
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for b in first.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        candidates[best]
    }
}

fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_one_line(&mut out, s);
    out
}

fn push_one_line(out: &mut String, s: &str) {
    if s.contains('\n') {
        out.push_str(&s.split_whitespace().collect::<Vec<_>>().join(" "));
    } else {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::tests::sections;
    use crate::extract::{Format, extract};

    #[test]
    fn csv_wider_than_the_bound_is_refused() {
        let row = |n: usize| {
            (0..n)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let wide = format!(
            "{}\n{}\n",
            row(CSV_MAX_COLUMNS + 1),
            row(CSV_MAX_COLUMNS + 1)
        );
        assert_eq!(
            extract(wide.as_bytes(), Format::Csv),
            Err(ExtractError::CsvTooWide(CSV_MAX_COLUMNS))
        );
        let ok = format!("{}\n{}\n", row(100), row(100));
        assert!(extract(ok.as_bytes(), Format::Csv).is_ok());
    }

    #[test]
    fn csv_rows_become_header_value_lines() {
        let csv = "name,city,note\r\n\"Smith, John\",Paris,\"said \"\"hi\"\"\"\r\nAnn,,\"two\nlines\"\r\n,,\r\n";
        let s = sections(csv.as_bytes(), Format::Csv);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].heading, None);
        assert_eq!(
            s[0].text,
            "name: Smith, John; city: Paris; note: said \"hi\"\nname: Ann; note: two lines"
        );
    }

    #[test]
    fn csv_delimiter_is_sniffed() {
        let s = sections(b"a;b;c\n1,5;2;3\n", Format::Csv);
        assert_eq!(s[0].text, "a: 1,5; b: 2; c: 3");
        let s = sections(b"a\tb\n1\t2\t3\n", Format::Csv);
        assert_eq!(s[0].text, "a: 1; b: 2; column 3: 3");
    }
}
