//! The default answerer: quotes the source sentences that best match the
//! question, each with its citation. No model, no network.

use std::collections::HashSet;

use futures::StreamExt;
use futures::future::BoxFuture;

use super::citations::resolve;
use super::{
    AnswerStream, ChatError, ChatModel, ChatRequest, ChatResponse, Piece, Usage, check_request,
};
use crate::{text, token_count};

/// Most sentences an answer quotes.
const MAX_SENTENCES: usize = 3;
/// A sentence must score at least this share of the best one's score.
const MIN_RELATIVE_SCORE: f64 = 0.5;
/// Longer "sentences" (text without punctuation) are cut at a word.
const MAX_SENTENCE_CHARS: usize = 500;
/// What the answer says when no sentence matches.
pub(crate) const NO_ANSWER: &str =
    "The documents provided do not contain an answer to this question.";

/// Answers with up to three source sentences sharing the most content
/// words with the question (lower-cased, stop words dropped, lightly
/// stemmed, rarer words weighing more), best first, each followed by its
/// source's `[n]`. The history is not used.
///
/// Guarantees: the same request always gets the same answer; the answer
/// fits `max_tokens` (cut after a whole sentence, or inside the first one
/// at a word if even that is too long); when no sentence shares a content
/// word with the question, the answer says the documents do not contain
/// one and cites nothing. Usage counts, in cl100k tokens, the question and
/// source texts read and the answer written.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExtractiveAnswerer;

impl ExtractiveAnswerer {
    pub fn new() -> Self {
        Self
    }

    fn answer(&self, req: &ChatRequest<'_>) -> ChatResponse {
        let max_tokens = req.max_tokens as usize;
        let read: usize = token_count::count(req.question)
            + req
                .sources
                .iter()
                .map(|s| token_count::count(&s.text))
                .sum::<usize>();
        let picked = best_sentences(req);
        let answer = if picked.is_empty() {
            fit_words(NO_ANSWER, "", max_tokens)
        } else {
            compose(&picked, max_tokens)
        };
        let valid: Vec<usize> = req.sources.iter().map(|s| s.number).collect();
        let (answer, cited) = resolve(&answer, &valid);
        ChatResponse {
            usage: Usage {
                prompt_tokens: read as u64,
                completion_tokens: token_count::count(&answer) as u64,
            },
            answer,
            cited,
        }
    }
}

impl ChatModel for ExtractiveAnswerer {
    fn name(&self) -> &str {
        "extractive"
    }

    fn complete<'a>(
        &'a self,
        req: &'a ChatRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, ChatError>> {
        Box::pin(async move {
            check_request(req)?;
            Ok(self.answer(req))
        })
    }

    fn generate<'a>(
        &'a self,
        req: &'a super::GenerateRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, ChatError>> {
        Box::pin(async move {
            super::check_generate(req)?;
            Ok(self.generated(req))
        })
    }

    /// The same answer, sentence by sentence (each with its markers).
    fn stream<'a>(&'a self, req: &'a ChatRequest<'a>) -> AnswerStream<'a> {
        let pieces = match check_request(req) {
            Ok(()) => {
                let response = self.answer(req);
                let mut pieces: Vec<_> = sentence_pieces(&response.answer)
                    .into_iter()
                    .map(|text| Ok(Piece::Text(text)))
                    .collect();
                pieces.push(Ok(Piece::Usage(response.usage)));
                pieces
            }
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(pieces).boxed()
    }
}

/// `answer` cut after each sentence's end and the markers that follow it;
/// the pieces join to `answer` exactly.
fn sentence_pieces(answer: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut ended = false;
    let mut in_marker = false;
    for (i, c) in answer.char_indices() {
        match c {
            '[' => in_marker = true,
            ']' => in_marker = false,
            '.' | '!' | '?' | '…' if !in_marker => ended = true,
            c if c.is_whitespace() && ended && !in_marker => {
                // The space after a sentence (and its markers) starts the next piece.
                let rest = &answer[i..];
                let next_is_marker = rest.trim_start().starts_with('[');
                if !next_is_marker {
                    pieces.push(answer[start..i].to_owned());
                    start = i;
                    ended = false;
                }
            }
            _ => {}
        }
    }
    if start < answer.len() {
        pieces.push(answer[start..].to_owned());
    }
    pieces
}

/// What free-form generation says when the prompt holds no text to
/// extract from (a bare question or instruction).
pub(crate) const NOTHING_TO_EXTRACT: &str = "The extractive provider writes only from text it \
    is given, and this prompt holds none to draw from: give it context documents or text, or \
    configure a model (CHAT_PROVIDER).";

/// Sentences free-form generation quotes at most.
const MAX_GENERATED_SENTENCES: usize = 5;

impl ExtractiveAnswerer {
    /// Free-form "generation": the prompt's most central sentences (see
    /// [`text::centrality`]), in prompt order, as many as fit
    /// `max_tokens`; [`NOTHING_TO_EXTRACT`] when the prompt has fewer than
    /// two sentences. Usage counts the prompt read and the text written,
    /// in cl100k tokens, as answers do.
    fn generated(&self, req: &super::GenerateRequest<'_>) -> ChatResponse {
        let sentences = text::distinct(text::sentences(req.prompt));
        let max_tokens = req.max_tokens as usize;
        let answer = if sentences.len() < 2 {
            fit_words(NOTHING_TO_EXTRACT, "", max_tokens)
        } else {
            let k = (sentences.len() / 3).clamp(1, MAX_GENERATED_SENTENCES);
            let mut picked = text::most_central(&sentences, k);
            let join = |picked: &[usize]| {
                picked
                    .iter()
                    .map(|&i| sentences[i].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            // Drop the last until it fits; cut the first at a word if need be.
            while picked.len() > 1 && token_count::count(&join(&picked)) > max_tokens {
                picked.pop();
            }
            fit_words(&join(&picked), "", max_tokens)
        };
        ChatResponse {
            usage: Usage {
                prompt_tokens: token_count::count(req.prompt) as u64,
                completion_tokens: token_count::count(&answer) as u64,
            },
            answer,
            cited: Vec::new(),
        }
    }
}

/// A source sentence and how well it matches.
#[derive(Debug)]
struct Candidate {
    source: usize,
    text: String,
    terms: Vec<String>,
    score: f64,
}

/// The best-scoring sentences (at most [`MAX_SENTENCES`], each within
/// [`MIN_RELATIVE_SCORE`] of the best), best first; ties go to the earlier
/// source and sentence. Empty when no sentence shares a content word.
fn best_sentences(req: &ChatRequest<'_>) -> Vec<Candidate> {
    let mut question: Vec<String> = text::terms(req.question);
    question.sort();
    question.dedup();
    if question.is_empty() {
        return Vec::new();
    }

    let mut seen = HashSet::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for source in req.sources {
        for sentence in sentences(&source.text) {
            // Overlapping chunks repeat sentences: quote each once.
            let key: String = sentence.to_lowercase().split_whitespace().collect();
            if !seen.insert(key) {
                continue;
            }
            let words = text::terms(&sentence);
            let terms: Vec<String> = question
                .iter()
                .filter(|q| words.iter().any(|w| same_word(q, w)))
                .cloned()
                .collect();
            candidates.push(Candidate {
                source: source.number,
                text: sentence,
                terms,
                score: 0.0,
            });
        }
    }

    // Rarer question words count more (inverse sentence frequency).
    let total = candidates.len() as f64;
    for q in &question {
        let df = candidates.iter().filter(|c| c.terms.contains(q)).count();
        if df == 0 {
            continue;
        }
        let weight = 1.0 + (total / df as f64).ln();
        for c in candidates.iter_mut().filter(|c| c.terms.contains(q)) {
            c.score += weight;
        }
    }

    candidates.retain(|c| c.score > 0.0);
    // Stable: equal scores keep source and sentence order.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let best = candidates.first().map_or(0.0, |c| c.score);
    candidates.retain(|c| c.score >= best * MIN_RELATIVE_SCORE);
    candidates.truncate(MAX_SENTENCES);
    candidates
}

/// The sentences joined, each with its marker, as many whole ones as fit
/// `max_tokens`; if not even the first fits, as many of its words as do.
fn compose(picked: &[Candidate], max_tokens: usize) -> String {
    let mut answer = String::new();
    for candidate in picked {
        let next = if answer.is_empty() {
            cite(&candidate.text, candidate.source)
        } else {
            format!("{answer} {}", cite(&candidate.text, candidate.source))
        };
        if token_count::count(&next) > max_tokens {
            break;
        }
        answer = next;
    }
    if answer.is_empty() {
        let first = &picked[0];
        let marker = format!(" [{}]", first.source);
        answer = fit_words(first.text.trim_end_matches('.'), &marker, max_tokens);
    }
    answer
}

/// `sentence` with `[n]` before its final period (or after other final
/// punctuation), ending in punctuation.
fn cite(sentence: &str, source: usize) -> String {
    match sentence.strip_suffix('.') {
        Some(body) => format!("{body} [{source}]."),
        None if sentence.ends_with(['?', '!']) => format!("{sentence} [{source}]"),
        None => format!("{sentence} [{source}]."),
    }
}

/// The longest word prefix of `text` that, followed by `…` and `suffix`,
/// fits `max_tokens`; all of `text` when it fits whole; empty if nothing
/// does.
fn fit_words(text: &str, suffix: &str, max_tokens: usize) -> String {
    let whole = format!("{text}{suffix}");
    if token_count::count(&whole) <= max_tokens {
        return whole;
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let candidate = |n: usize| format!("{}…{suffix}", words[..n].join(" "));
    // The count grows with the number of words: binary search the most.
    let (mut lo, mut hi) = (0, words.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if token_count::count(&candidate(mid)) <= max_tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        String::new()
    } else {
        candidate(lo)
    }
}

/// Sentences of a source text, as [`text::sentences`] cuts them, with the
/// citation markers the text carries dropped (they would read as ours).
fn sentences(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    crate::sentences::split(source, |piece| {
        let (clean, _) = resolve(piece, &[]);
        out.extend(text::clean_sentence(&clean, MAX_SENTENCE_CHARS));
    });
    out
}

/// Equal stems, or one a prefix of the other when the shorter has at
/// least four letters ("configur" / "configuration").
fn same_word(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.chars().count() >= 4 && long.starts_with(short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::tests::{capitals, source};
    use crate::chat::{Role, Source, Turn, estimate_prompt_tokens};

    async fn ask(question: &str, sources: &[Source], max_tokens: u32) -> ChatResponse {
        let req = ChatRequest {
            question,
            history: &[],
            sources,
            max_tokens,
        };
        ExtractiveAnswerer::new().complete(&req).await.unwrap()
    }

    #[tokio::test]
    async fn quotes_the_matching_sentence_with_its_citation() {
        let response = ask("What is the capital of France?", &capitals(), 200).await;
        assert!(
            response
                .answer
                .starts_with("Paris is the capital of France [1]."),
            "{}",
            response.answer
        );
        assert_eq!(response.cited.first(), Some(&1));
        assert!(!response.answer.contains("Seine"), "{}", response.answer);
    }

    #[tokio::test]
    async fn cites_every_source_it_quotes_in_order_of_mention() {
        let sources = vec![
            source(1, "A", None, "Cats sleep a lot. Dogs bark."),
            source(2, "B", None, "Dogs are loyal. Cats purr."),
        ];
        let response = ask("Do dogs bark and are dogs loyal?", &sources, 200).await;
        assert_eq!(response.answer, "Dogs bark [1]. Dogs are loyal [2].");
        assert_eq!(response.cited, [1, 2]);
    }

    #[tokio::test]
    async fn the_stream_is_the_answer_sentence_by_sentence() {
        let sources = capitals();
        let req = ChatRequest {
            question: "What is the capital of France and of Germany?",
            history: &[],
            sources: &sources,
            max_tokens: 200,
        };
        let whole = ExtractiveAnswerer::new().complete(&req).await.unwrap();
        let pieces: Vec<Piece> = ExtractiveAnswerer::new()
            .stream(&req)
            .map(Result::unwrap)
            .collect()
            .await;
        let (usage, texts) = pieces.split_last().unwrap();
        assert_eq!(usage, &Piece::Usage(whole.usage));
        let texts: Vec<&str> = texts
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                Piece::Usage(_) => panic!("usage before the end"),
            })
            .collect();
        assert_eq!(texts.concat(), whole.answer);
        assert!(texts.len() >= 2, "one piece per sentence: {texts:?}");
        assert_eq!(
            sentence_pieces("One [1]. Two [2][3]! Three... four"),
            ["One [1].", " Two [2][3]!", " Three...", " four"]
        );
    }

    #[tokio::test]
    async fn at_most_three_sentences() {
        let text = (1..=8)
            .map(|i| format!("Backups run nightly on server {i}."))
            .collect::<Vec<_>>()
            .join(" ");
        let sources = vec![source(1, "Ops", None, &text)];
        let response = ask("When do backups run?", &sources, 500).await;
        assert_eq!(
            response.answer.matches("[1]").count(),
            3,
            "{}",
            response.answer
        );
        assert_eq!(response.cited, [1]);
    }

    #[tokio::test]
    async fn says_so_when_nothing_matches() {
        let response = ask("How do volcanoes erupt?", &capitals(), 200).await;
        assert_eq!(response.answer, NO_ANSWER);
        assert!(response.cited.is_empty());
        let response = ask("What is it?", &capitals(), 200).await;
        assert_eq!(response.answer, NO_ANSWER, "stop words only");
        let response = ask("capital", &[], 200).await;
        assert_eq!(response.answer, NO_ANSWER, "no sources");
    }

    #[tokio::test]
    async fn stems_and_prefixes_match() {
        let sources = vec![source(
            1,
            "Setup",
            Some("Intro > Setup"),
            "The configuration lives in /etc/app. Installing takes two minutes.",
        )];
        let response = ask("how long does the installation take", &sources, 200).await;
        assert_eq!(response.answer, "Installing takes two minutes [1].");
        let response = ask("Where do I configure it?", &sources, 200).await;
        assert_eq!(response.answer, "The configuration lives in /etc/app [1].");
        let response = ask(
            "Which cities?",
            &[source(1, "T", None, "Both city halls opened.")],
            50,
        )
        .await;
        assert_eq!(response.answer, "Both city halls opened [1].");
    }

    #[tokio::test]
    async fn deterministic_and_blind_to_history() {
        let sources = capitals();
        let history = [Turn {
            role: Role::User,
            content: "Germany?".into(),
        }];
        let with_history = ChatRequest {
            question: "Which capital has museums?",
            history: &history,
            sources: &sources,
            max_tokens: 100,
        };
        let a = ExtractiveAnswerer::new()
            .complete(&with_history)
            .await
            .unwrap();
        let b = ask("Which capital has museums?", &sources, 100).await;
        assert_eq!(a, b);
        assert!(
            a.answer.starts_with("It has many museums [2]."),
            "{}",
            a.answer
        );
    }

    #[tokio::test]
    async fn respects_max_tokens_at_sentence_boundaries() {
        let sources = vec![source(
            1,
            "Ops",
            None,
            "Backups run nightly at two. Backups are kept for thirty days in another region.",
        )];
        let full = ask("backups", &sources, 500).await;
        assert_eq!(full.cited, [1]);
        assert_eq!(full.answer.matches("[1]").count(), 2, "{}", full.answer);
        let first = "Backups run nightly at two [1].";
        let limit = token_count::count(first) as u32;
        let cut = ask("backups", &sources, limit).await;
        assert_eq!(cut.answer, first);
        assert!(cut.usage.completion_tokens <= u64::from(limit));

        // Not even one sentence fits: cut at a word, still cited.
        let tiny = ask("backups", &sources, 6).await;
        assert!(tiny.answer.ends_with("… [1]"), "{}", tiny.answer);
        assert!(tiny.usage.completion_tokens <= 6);
        assert_eq!(tiny.cited, [1]);
        let none = ask("volcano", &sources, 5).await;
        assert!(none.usage.completion_tokens <= 5, "{}", none.answer);
        assert!(none.cited.is_empty());
    }

    #[tokio::test]
    async fn usage_counts_what_was_read_and_written() {
        let sources = capitals();
        let question = "What is the capital of France?";
        let response = ask(question, &sources, 200).await;
        let read = token_count::count(question)
            + sources
                .iter()
                .map(|s| token_count::count(&s.text))
                .sum::<usize>();
        assert_eq!(response.usage.prompt_tokens, read as u64);
        assert_eq!(
            response.usage.completion_tokens,
            token_count::count(&response.answer) as u64
        );
        let req = ChatRequest {
            question,
            history: &[],
            sources: &sources,
            max_tokens: 200,
        };
        assert!(response.usage.prompt_tokens <= estimate_prompt_tokens(&req));
    }

    #[tokio::test]
    async fn markers_in_source_text_are_not_mistaken_for_citations() {
        let sources = vec![
            source(
                1,
                "Paper",
                None,
                "Transformers use attention [12]. See also [2].",
            ),
            source(2, "Other", None, "Unrelated text about birds."),
        ];
        let response = ask("What do transformers use?", &sources, 200).await;
        assert_eq!(response.answer, "Transformers use attention [1].");
        assert_eq!(response.cited, [1]);
    }

    #[tokio::test]
    async fn duplicate_sentences_from_overlapping_chunks_are_quoted_once() {
        let sources = vec![
            source(
                1,
                "Doc",
                None,
                "Alpha is first. Tokens expire after one hour.",
            ),
            source(
                2,
                "Doc",
                None,
                "Tokens expire after one hour. Refresh them daily.",
            ),
        ];
        let response = ask("When do tokens expire?", &sources, 200).await;
        assert_eq!(response.answer, "Tokens expire after one hour [1].");
        assert_eq!(response.cited, [1]);
    }

    #[test]
    fn sentence_splitting() {
        assert_eq!(
            sentences(
                "One two three. Four five six!\n- Seven eight nine\n\n1.\nVersion 2.5 is out? Yes."
            ),
            [
                "One two three.",
                "Four five six!",
                "Seven eight nine",
                "Version 2.5 is out?",
                "Yes."
            ]
        );
        let long = "word ".repeat(300);
        let cut = &sentences(&long)[0];
        assert!(cut.ends_with('…') && cut.chars().count() <= MAX_SENTENCE_CHARS + 1);
    }

    #[test]
    fn prefixes_of_four_letters_match() {
        assert!(same_word("configur", "configuration"));
        assert!(!same_word("cat", "category"));
    }
}

#[cfg(test)]
mod generate_tests {
    use super::*;
    use crate::chat::GenerateRequest;

    async fn generate(prompt: &str, max_tokens: u32) -> ChatResponse {
        let req = GenerateRequest {
            system: "ignored",
            prompt,
            max_tokens,
            model: None,
        };
        ExtractiveAnswerer::new().generate(&req).await.unwrap()
    }

    #[tokio::test]
    async fn generation_quotes_the_prompts_central_sentences() {
        let prompt = "Solar panels convert sunlight into electricity. The cafeteria serves soup. \
                      Solar panels feed electricity into the grid. Cats nap a lot. \
                      Electricity from solar panels is cheapest at noon. Bikes are red.";
        let response = generate(prompt, 200).await;
        assert!(
            response.answer.contains("Solar panels"),
            "{}",
            response.answer
        );
        for aside in ["soup", "Cats", "Bikes"] {
            assert!(!response.answer.contains(aside), "{}", response.answer);
        }
        assert!(response.cited.is_empty());
        assert_eq!(
            response.usage.prompt_tokens,
            token_count::count(prompt) as u64
        );
        assert_eq!(
            response.usage.completion_tokens,
            token_count::count(&response.answer) as u64
        );
        let short = generate(prompt, 5).await;
        assert!(short.usage.completion_tokens <= 5, "{}", short.answer);
    }

    #[tokio::test]
    async fn a_bare_question_is_answered_with_what_the_provider_cannot_do() {
        let response = generate("Why is the sky blue?", 200).await;
        assert_eq!(response.answer, NOTHING_TO_EXTRACT);
        let req = GenerateRequest {
            system: "",
            prompt: "x",
            max_tokens: 0,
            model: None,
        };
        assert!(ExtractiveAnswerer::new().generate(&req).await.is_err());
    }
}
