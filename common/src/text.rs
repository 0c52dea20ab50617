//! Text statistics without a model: sentences, content words (one stop
//! list, one stemmer), sentence centrality and key phrases. The
//! extractive answerer and the study tools both build on them.

use std::collections::HashMap;

/// Longer "sentences" (text without punctuation) are cut at a word.
const MAX_SENTENCE_CHARS: usize = 600;

/// Words that say nothing about a text's subject or what is asked.
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as",
    "at", "be", "because", "been", "before", "being", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "done", "during", "each", "either", "else", "for",
    "from", "get", "gets", "give", "had", "has", "have", "having", "he", "her", "here", "hers",
    "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "know", "let", "like",
    "many", "may", "me", "might", "more", "most", "much", "must", "my", "no", "nor", "not", "of",
    "off", "on", "once", "one", "only", "or", "other", "our", "ours", "out", "over", "please",
    "same", "shall", "she", "should", "so", "some", "such", "tell", "than", "that", "the", "their",
    "theirs", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too",
    "two", "under", "until", "up", "us", "use", "used", "uses", "using", "very", "was", "we",
    "were", "what", "when", "where", "which", "while", "who", "whom", "whose", "why", "will",
    "with", "would", "you", "your", "yours",
];

/// Whitespace-separated words, as a reader counts them.
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Sentences of `text`: lines split after `.`, `!` or `?` followed by a
/// space; list markers and heading hashes dropped; fragments with fewer
/// than three letters or digits skipped; very long ones cut at a word.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    crate::sentences::split(text, |piece| {
        out.extend(clean_sentence(piece, MAX_SENTENCE_CHARS));
    });
    out
}

/// One piece of [`crate::sentences::split`] as a sentence: list markers
/// and heading hashes dropped, None when fewer than three letters or
/// digits are left ("1." or "e.g." alone is no sentence), cut at a word
/// after `max_chars`.
pub fn clean_sentence(raw: &str, max_chars: usize) -> Option<String> {
    let clean = raw
        .trim_start_matches(['-', '*', '#', '>', ' ', '\t'])
        .trim();
    if clean.chars().filter(|c| c.is_alphanumeric()).count() < 3 {
        return None;
    }
    Some(match clean.char_indices().nth(max_chars) {
        None => clean.to_owned(),
        Some((cut, _)) => {
            let head = &clean[..cut];
            let head = head
                .rsplit_once(char::is_whitespace)
                .map_or(head, |(h, _)| h);
            format!("{}…", head.trim_end())
        }
    })
}

/// Sentences without repeats: overlapping chunks of one document share
/// text, so a sentence equal to, or contained in, one of the last few kept
/// is dropped.
pub fn distinct(sentences: Vec<String>) -> Vec<String> {
    const LOOK_BACK: usize = 32;
    let mut kept: Vec<String> = Vec::with_capacity(sentences.len());
    for sentence in sentences {
        let start = kept.len().saturating_sub(LOOK_BACK);
        if kept[start..].iter().any(|k| k.contains(sentence.as_str())) {
            continue;
        }
        kept.push(sentence);
    }
    kept
}

/// Lower-cased, stemmed words of `text` that are not stop words: what a
/// question and a sentence are matched on.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

/// [`terms`] of at least three characters and not all digits: what a
/// text is about, for its statistics.
pub fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3 && !w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

/// A light suffix stripper: plurals, -ing, -ed, -ly, final e. Enough to
/// match "installing" with "installed" and "cities" with "city".
pub fn stem(word: &str) -> String {
    let chars = word.chars().count();
    let strip = |suffix: &str, min_rest: usize| {
        word.strip_suffix(suffix)
            .filter(|rest| rest.chars().count() >= min_rest)
    };
    let mut w = if let Some(rest) = strip("ies", 2) {
        format!("{rest}y")
    } else if let Some(rest) = strip("sses", 2) {
        format!("{rest}ss")
    } else if let Some(rest) = strip("ing", 3)
        .or_else(|| strip("ed", 3))
        .or_else(|| strip("ly", 3))
    {
        rest.to_owned()
    } else if chars > 3
        && word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
    {
        word[..word.len() - 1].to_owned()
    } else {
        word.to_owned()
    };
    if w.chars().count() > 4 && w.ends_with('e') {
        w.pop();
    }
    w
}

/// TF-IDF vectors of `texts` over their content words, unit length (empty
/// for a text with none).
fn tf_idf(texts: &[String]) -> Vec<HashMap<String, f64>> {
    let terms: Vec<Vec<String>> = texts.iter().map(|t| content_words(t)).collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for words in &terms {
        let mut seen: Vec<&str> = words.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for w in seen {
            *df.entry(w).or_default() += 1;
        }
    }
    let n = texts.len().max(1) as f64;
    terms
        .iter()
        .map(|words| {
            let mut v: HashMap<String, f64> = HashMap::new();
            for w in words {
                *v.entry(w.clone()).or_default() += 1.0;
            }
            for (w, x) in v.iter_mut() {
                *x *= 1.0 + (n / df[w.as_str()] as f64).ln();
            }
            let norm = v.values().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 0.0 {
                v.values_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect()
}

fn cosine(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> f64 {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small
        .iter()
        .filter_map(|(w, x)| large.get(w).map(|y| x * y))
        .sum()
}

/// Each sentence's centrality: the sum of its TF-IDF cosine similarity to
/// every other sentence (degree centrality, as in LexRank without the
/// random walk). A sentence that shares the text's main subjects scores
/// high; an aside or a sentence without content words scores 0.
pub fn centrality(sentences: &[String]) -> Vec<f64> {
    let vectors = tf_idf(sentences);
    let mut scores = vec![0.0; sentences.len()];
    for i in 0..vectors.len() {
        for j in (i + 1)..vectors.len() {
            let s = cosine(&vectors[i], &vectors[j]);
            scores[i] += s;
            scores[j] += s;
        }
    }
    scores
}

/// The indexes of the `k` most central of `sentences`, in text order.
/// Ties go to the earlier sentence.
pub fn most_central(sentences: &[String], k: usize) -> Vec<usize> {
    let scores = centrality(sentences);
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    // Stable: equal scores keep text order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(k);
    order.sort_unstable();
    order
}

/// Document frequencies of content words over a set of texts, computed
/// once for every [`key_phrases`] call against it.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    texts: usize,
    df: HashMap<String, usize>,
}

impl Corpus {
    pub fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut corpus = Self::default();
        for text in texts {
            corpus.texts += 1;
            let mut words = content_words(text);
            words.sort_unstable();
            words.dedup();
            for w in words {
                *corpus.df.entry(w).or_default() += 1;
            }
        }
        corpus
    }

    /// `1 + ln(N / df)`: rarer words weigh more.
    fn idf(&self, term: &str) -> f64 {
        let df = self.df.get(term).copied().unwrap_or(0).max(1);
        1.0 + (self.texts.max(1) as f64 / df as f64).ln()
    }
}

/// The `k` key phrases of `text` against the `corpus` it is part of:
/// content words and two-word phrases of adjacent content words (a phrase
/// once seen twice), weighted by frequency in `text` and rarity in
/// `corpus`, best first. Each phrase is given as written at its first
/// occurrence (lower-cased).
pub fn key_phrases(text: &str, corpus: &Corpus, k: usize) -> Vec<String> {
    // Surface forms, in order, with their stems; runs broken by stop words.
    let mut runs: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\'')) {
        let lower = raw.trim_matches(['-', '\'']).to_lowercase();
        let keep = lower.chars().count() >= 3
            && !STOP_WORDS.contains(&lower.as_str())
            && !lower.chars().all(|c| c.is_ascii_digit());
        if keep {
            let stemmed = stem(&lower);
            runs.last_mut().unwrap().push((lower, stemmed));
        } else if !runs.last().unwrap().is_empty() {
            runs.push(Vec::new());
        }
    }
    let mut scores: HashMap<String, (f64, String, usize)> = HashMap::new();
    let mut bigram_counts: HashMap<String, usize> = HashMap::new();
    let mut position = 0;
    for run in &runs {
        for (i, (surface, stemmed)) in run.iter().enumerate() {
            position += 1;
            let idf = corpus.idf(stemmed);
            let entry = scores
                .entry(stemmed.clone())
                .or_insert((0.0, surface.clone(), position));
            entry.0 += idf;
            if let Some((next_surface, next_stem)) = run.get(i + 1) {
                let idf2 = corpus.idf(next_stem);
                let entry = scores.entry(format!("{stemmed} {next_stem}")).or_insert((
                    0.0,
                    format!("{surface} {next_surface}"),
                    position,
                ));
                // Scored as most of both its words; kept once seen twice
                // (below), so a repeated phrase outranks its words alone.
                entry.0 += (idf + idf2) * 0.8;
                *bigram_counts
                    .entry(format!("{stemmed} {next_stem}"))
                    .or_insert(0) += 1;
            }
        }
    }
    let mut ranked: Vec<(f64, String, usize, String)> = scores
        .into_iter()
        .filter(|(key, _)| bigram_counts.get(key).is_none_or(|&n| n >= 2))
        .map(|(key, (score, surface, first))| (score, surface, first, key))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
    let mut picked: Vec<(String, String)> = Vec::new();
    for (_, surface, _, key) in ranked {
        if picked.len() == k {
            break;
        }
        // A word already inside a picked phrase (or the reverse) adds nothing.
        let overlaps = picked
            .iter()
            .any(|(other, _)| other.split(' ').any(|w| key.split(' ').any(|x| x == w)));
        if !overlaps {
            picked.push((key, surface));
        }
    }
    picked.into_iter().map(|(_, surface)| surface).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_and_repeats_drop() {
        let s = sentences("# Setup\nInstall it first. Then run it!\n- a list item here\n1.");
        assert_eq!(
            s,
            [
                "Setup",
                "Install it first.",
                "Then run it!",
                "a list item here"
            ]
        );
        let d = distinct(vec![
            "Alpha beta gamma.".into(),
            "beta gamma.".into(),
            "Alpha beta gamma.".into(),
            "Delta.".into(),
        ]);
        assert_eq!(d, ["Alpha beta gamma.", "Delta."]);
    }

    #[test]
    fn the_sentence_on_the_main_subject_is_most_central() {
        let text: Vec<String> = [
            "Backups of the database run every night.",
            "The weather was pleasant on Tuesday.",
            "Database backups are kept for thirty days.",
            "Restoring a database backup takes an hour.",
        ]
        .map(String::from)
        .into();
        let scores = centrality(&text);
        assert!(scores[1] < scores[0] && scores[1] < scores[2], "{scores:?}");
        assert_eq!(most_central(&text, 2).len(), 2);
        assert!(!most_central(&text, 3).contains(&1));
    }

    #[test]
    fn key_phrases_prefer_repeated_rare_terms() {
        let corpus = [
            "Vector indexes speed up vector search. Vector indexes use memory.",
            "Billing runs monthly. Invoices are mailed.",
        ];
        let phrases = key_phrases(corpus[0], &Corpus::new(corpus), 3);
        assert_eq!(phrases[0], "vector indexes", "{phrases:?}");
        assert!(!phrases.iter().any(|p| p.contains("billing")));
    }

    #[test]
    fn stemming() {
        for (word, want) in [
            ("cities", "city"),
            ("classes", "class"),
            ("installing", "install"),
            ("installed", "install"),
            ("quickly", "quick"),
            ("backups", "backup"),
            ("status", "status"),
            ("analysis", "analysis"),
            ("configure", "configur"),
            ("is", "is"),
            ("bus", "bus"),
        ] {
            assert_eq!(stem(word), want, "{word}");
        }
        assert_eq!(
            terms("How do I install 2 servers?"),
            ["install", "2", "server"]
        );
        assert_eq!(
            content_words("How do I install 2 servers?"),
            ["install", "server"]
        );
    }

    #[test]
    fn words_are_counted_as_readers_do() {
        assert_eq!(word_count("  one two\nthree  "), 3);
        assert_eq!(word_count(""), 0);
    }
}
