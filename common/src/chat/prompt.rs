//! The prompt the remote providers send: instructions in the system text,
//! the conversation so far, then one user message holding the numbered
//! sources and the question.

use std::fmt::Write as _;

use super::{ChatRequest, Role, Source};
use crate::token_count;

/// What the model is told to do.
pub(crate) const INSTRUCTIONS: &str = "\
You answer questions about the user's documents. Use only the numbered sources \
given with the question, never other knowledge. After each statement taken from \
a source, cite that source by its number in square brackets, like [1] or [1, 3]; \
cite only numbers of sources that were given. If the sources do not contain the \
answer, say that the documents do not contain it, and do not guess. Answer in the \
language of the question, briefly.";

/// Tokens a chat format adds around each message (role and delimiters;
/// ChatML takes 4) and to prime the reply; generous so the estimate
/// stays an upper bound.
const TOKENS_PER_MESSAGE: u64 = 5;
const TOKENS_FOR_REPLY: u64 = 4;

/// One message after the system text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub role: Role,
    pub content: String,
}

/// System text and messages, the last one a user message with the
/// sources and the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prompt {
    pub system: String,
    pub messages: Vec<Message>,
}

impl Prompt {
    /// History turns with text, oldest first, then the question with its
    /// sources. Empty turns are left out (Bedrock rejects empty text).
    pub fn new(req: &ChatRequest<'_>) -> Self {
        let mut messages: Vec<Message> = req
            .history
            .iter()
            .filter(|t| !t.content.trim().is_empty())
            .map(|t| Message {
                role: t.role,
                content: t.content.clone(),
            })
            .collect();
        messages.push(Message {
            role: Role::User,
            content: question_with_sources(req.question, req.sources),
        });
        Self {
            system: INSTRUCTIONS.to_owned(),
            messages,
        }
    }

    /// cl100k tokens of every text sent plus per-message overhead.
    pub fn estimate_tokens(&self) -> u64 {
        let text: usize = token_count::count(&self.system)
            + self
                .messages
                .iter()
                .map(|m| token_count::count(&m.content))
                .sum::<usize>();
        text as u64 + TOKENS_PER_MESSAGE * (self.messages.len() as u64 + 1) + TOKENS_FOR_REPLY
    }

    /// The messages as APIs demanding strict turns (Bedrock Converse) take
    /// them: leading assistant turns dropped, consecutive turns of one role
    /// merged, so the first is a user turn and roles alternate. The question
    /// stays last, since it is a user turn.
    pub fn alternating(&self) -> Vec<Message> {
        let mut out: Vec<Message> = Vec::with_capacity(self.messages.len());
        for message in &self.messages {
            match out.last_mut() {
                None if message.role == Role::Assistant => {}
                Some(last) if last.role == message.role => {
                    last.content.push_str("\n\n");
                    last.content.push_str(&message.content);
                }
                _ => out.push(message.clone()),
            }
        }
        out
    }
}

/// `Sources:` then each source as `[n] Title (locator)` over its text,
/// then `Question: …`.
fn question_with_sources(question: &str, sources: &[Source]) -> String {
    let mut out = String::new();
    if sources.is_empty() {
        out.push_str("Sources: none were found.\n\n");
    } else {
        out.push_str("Sources:\n\n");
        for source in sources {
            let _ = write!(out, "[{}] {}", source.number, source.title.trim());
            if let Some(locator) = source.locator.as_deref().map(str::trim)
                && !locator.is_empty()
            {
                let _ = write!(out, " ({locator})");
            }
            out.push('\n');
            out.push_str(source.text.trim());
            out.push_str("\n\n");
        }
    }
    out.push_str("Question: ");
    out.push_str(question.trim());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Turn;
    use crate::chat::tests::{capitals, source};

    fn turn(role: Role, content: &str) -> Turn {
        Turn {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn sources_are_numbered_with_title_and_locator_before_the_question() {
        let sources = capitals();
        let req = ChatRequest {
            question: "  What is the capital of France? ",
            history: &[],
            sources: &sources,
            max_tokens: 100,
        };
        let prompt = Prompt::new(&req);
        assert_eq!(prompt.system, INSTRUCTIONS);
        assert_eq!(prompt.messages.len(), 1);
        assert_eq!(prompt.messages[0].role, Role::User);
        assert_eq!(
            prompt.messages[0].content,
            "Sources:\n\n\
             [1] France (p. 3)\nParis is the capital of France. It lies on the Seine.\n\n\
             [2] Germany\nBerlin is the capital of Germany. It has many museums.\n\n\
             Question: What is the capital of France?"
        );
    }

    #[test]
    fn instructions_ask_for_citations_and_admitting_ignorance() {
        assert!(INSTRUCTIONS.contains("[1]"));
        assert!(INSTRUCTIONS.contains("only the numbered sources"));
        assert!(INSTRUCTIONS.contains("do not contain"));
    }

    #[test]
    fn no_sources_is_said_plainly() {
        let req = ChatRequest {
            question: "Why?",
            history: &[],
            sources: &[],
            max_tokens: 100,
        };
        assert_eq!(
            Prompt::new(&req).messages[0].content,
            "Sources: none were found.\n\nQuestion: Why?"
        );
    }

    #[test]
    fn history_comes_before_the_question_without_empty_turns() {
        let history = [
            turn(Role::User, "first"),
            turn(Role::Assistant, "  "),
            turn(Role::Assistant, "reply"),
        ];
        let sources = [source(1, "T", Some(" "), "text")];
        let req = ChatRequest {
            question: "second",
            history: &history,
            sources: &sources,
            max_tokens: 100,
        };
        let prompt = Prompt::new(&req);
        let roles: Vec<Role> = prompt.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        assert_eq!(prompt.messages[1].content, "reply");
        assert!(
            prompt.messages[2]
                .content
                .starts_with("Sources:\n\n[1] T\ntext")
        );
    }

    #[test]
    fn alternating_starts_with_user_and_merges_runs() {
        let history = [
            turn(Role::Assistant, "Hello, how can I help?"),
            turn(Role::User, "one"),
            turn(Role::User, "two"),
            turn(Role::Assistant, "a"),
            turn(Role::Assistant, "b"),
            turn(Role::User, "unanswered"),
        ];
        let req = ChatRequest {
            question: "three",
            history: &history,
            sources: &[],
            max_tokens: 100,
        };
        let messages = Prompt::new(&req).alternating();
        let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        assert_eq!(messages[0].content, "one\n\ntwo");
        assert_eq!(messages[1].content, "a\n\nb");
        assert!(messages[2].content.starts_with("unanswered\n\nSources:"));
        assert!(messages[2].content.ends_with("Question: three"));
    }

    #[test]
    fn estimate_counts_every_text_sent() {
        let sources = capitals();
        let history = [turn(Role::User, "earlier question")];
        let req = ChatRequest {
            question: "What is the capital of France?",
            history: &history,
            sources: &sources,
            max_tokens: 100,
        };
        let prompt = Prompt::new(&req);
        let texts = token_count::count(&prompt.system)
            + prompt
                .messages
                .iter()
                .map(|m| token_count::count(&m.content))
                .sum::<usize>();
        assert_eq!(
            prompt.estimate_tokens(),
            texts as u64 + 3 * TOKENS_PER_MESSAGE + TOKENS_FOR_REPLY
        );
    }
}
