//! Token counting in `cl100k_base`, the unit of every budget: workspace
//! daily limits, prompt estimates and the usage the extractive answerer
//! reports.

/// Exact `cl100k_base` token count of `text`, special tokens counted as
/// plain text (as tiktoken's `encode_ordinary` does). tiktoken-rs builds
/// the encoder once per process, on first use (a few tens of milliseconds).
pub fn count(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::cl100k_base_singleton()
        .encode_ordinary(text)
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_known_cl100k_values() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        assert_eq!(count("Hello, world!"), 4);
        // Special tokens are ordinary text here, never a single token.
        assert!(count("<|endoftext|>") > 1);
        assert!(count(&"word ".repeat(1000)) >= 1000);
    }

    #[test]
    fn counting_is_shared_across_threads() {
        let counts: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| count("The quick brown fox")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(counts.iter().all(|&c| c == 4), "{counts:?}");
    }
}
