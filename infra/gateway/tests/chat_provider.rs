//! The OpenAI-compatible chat provider against a real local server process
//! (llama.cpp with SmolLM2-135M, started by `infra/stack/llm.sh up`), not an
//! in-test fake. Skipped, saying why, when `RAGWAY_TEST_CHAT_BASE_URL` is
//! unset.

use std::io::Write as _;

use common::chat::{ChatRequest, Piece, Role, Source, Turn, estimate_prompt_tokens};

mod support;
use support::config;

/// Printed past the test harness's capture, so a skip is visible.
fn say(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "chat_provider: {message}");
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[tokio::test]
async fn openai_provider_answers_from_a_real_local_server() {
    let Some(base_url) = env("RAGWAY_TEST_CHAT_BASE_URL") else {
        say(
            "SKIPPED: RAGWAY_TEST_CHAT_BASE_URL is not set, so no local OpenAI-compatible \
             server runs (start one with `infra/stack/llm.sh up` and load its env file)",
        );
        return;
    };
    let model = env("RAGWAY_TEST_CHAT_MODEL").unwrap_or_else(|| "smollm2-135m-instruct".into());

    // Given the openai provider configured the way a function reads it,
    let chat_config = config(&[
        ("CHAT_PROVIDER", "openai"),
        ("CHAT_BASE_URL", &base_url),
        ("CHAT_MODEL", &model),
        ("CHAT_TIMEOUT_SECONDS", "120"),
        ("CHAT_MAX_RETRIES", "1"),
    ])
    .chat;
    let chat = common::chat::build(&chat_config, None).unwrap();
    assert_eq!(chat.name(), model);

    // and a conversation with two numbered sources,
    let sources = [
        Source {
            number: 1,
            title: "Billing handbook".into(),
            locator: Some("p. 2".into()),
            text: "Invoices are sent on the first business day of each month. \
                   Payment is due within 30 days of the invoice date."
                .into(),
        },
        Source {
            number: 2,
            title: "Office guide".into(),
            locator: None,
            text: "The office is closed on public holidays. \
                   Visitors must sign in at the front desk."
                .into(),
        },
    ];
    let history = [
        Turn {
            role: Role::User,
            content: "I have a question about billing.".into(),
        },
        Turn {
            role: Role::Assistant,
            content: "Sure, what would you like to know?".into(),
        },
    ];
    let request = ChatRequest {
        question: "When are invoices sent?",
        history: &history,
        sources: &sources,
        max_tokens: 64,
    };

    // when the model is asked,
    let started = std::time::Instant::now();
    let response = chat.complete(&request).await.unwrap();
    say(&format!(
        "{model} answered in {:.1}s: {:?} cited {:?}, usage {:?} (cl100k estimate {})",
        started.elapsed().as_secs_f64(),
        response.answer,
        response.cited,
        response.usage,
        estimate_prompt_tokens(&request)
    ));

    // then it answers, the server reports what it used, and every citation
    // names one of the two sources.
    assert!(!response.answer.trim().is_empty());
    assert!(response.usage.prompt_tokens > 0, "{:?}", response.usage);
    assert!(response.usage.completion_tokens > 0, "{:?}", response.usage);
    assert!(
        response.usage.completion_tokens <= u64::from(request.max_tokens),
        "{:?}",
        response.usage
    );
    assert!(
        response
            .cited
            .iter()
            .all(|n| (1..=sources.len()).contains(n)),
        "{:?}",
        response.cited
    );

    // Streamed, the same server sends the answer token by token, then its usage.
    use futures::StreamExt;
    let started = std::time::Instant::now();
    let pieces: Vec<_> = chat.stream(&request).collect().await;
    let pieces: Vec<Piece> = pieces.into_iter().map(Result::unwrap).collect();
    let (last, texts) = pieces.split_last().unwrap();
    say(&format!(
        "{model} streamed {} pieces in {:.1}s, then {last:?}",
        texts.len(),
        started.elapsed().as_secs_f64()
    ));
    let Piece::Usage(usage) = last else {
        panic!("the stream did not end with its usage: {last:?}")
    };
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    assert!(texts.len() > 1, "one piece per token or so: {texts:?}");
    assert!(texts.iter().all(|p| matches!(p, Piece::Text(_))));
}
