//! Bedrock's ConverseStream answer read into pieces: the response body is
//! a sequence of binary event-stream frames (`application/vnd.amazon.eventstream`),
//! decoded with the AWS SDK's own frame decoder, each a JSON event or an
//! exception.

use std::collections::VecDeque;

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::BytesMut;
use serde::Deserialize;

use super::super::{ChatError, Piece, Usage};
use crate::token_count;

/// What ConverseStream answers with.
pub(super) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// Names the call in errors.
const WHAT: &str = "bedrock converse-stream";

/// The event-stream format's largest message: a garbled length is not
/// buffered for ever.
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Reads a ConverseStream response: `messageStart`, `contentBlockDelta`s,
/// `contentBlockStop`, `messageStop`, then `metadata` with the usage. A
/// body that ends before `messageStop`, an exception frame or a frame that
/// does not decode ends the pieces with an error, after whatever text came
/// before it.
pub(super) struct EventStreamReader {
    response: reqwest::Response,
    buf: BytesMut,
    decoder: MessageFrameDecoder,
    /// The decoder holds the prelude of a frame whose rest has not come.
    in_frame: bool,
    /// What was written so far, to count it if no usage is reported.
    text: String,
    usage: Option<StreamUsage>,
    prompt_estimate: u64,
    stop_reason: Option<String>,
    queue: VecDeque<Piece>,
    /// Ends the pieces once the text decoded before it is given.
    failed: Option<ChatError>,
    ended: bool,
}

impl EventStreamReader {
    /// `prompt_estimate` counts the prompt if the stream reports no usage.
    pub fn new(response: reqwest::Response, prompt_estimate: u64) -> Self {
        Self {
            response,
            buf: BytesMut::new(),
            decoder: MessageFrameDecoder::new(),
            in_frame: false,
            text: String::new(),
            usage: None,
            prompt_estimate,
            stop_reason: None,
            queue: VecDeque::new(),
            failed: None,
            ended: false,
        }
    }

    /// The next piece; `None` after the usage or an error.
    pub async fn next(&mut self) -> Option<Result<Piece, ChatError>> {
        loop {
            if let Some(piece) = self.queue.pop_front() {
                return Some(Ok(piece));
            }
            if let Some(e) = self.failed.take() {
                self.ended = true;
                return Some(Err(e));
            }
            if self.ended {
                return None;
            }
            let step = match self.response.chunk().await {
                Ok(Some(bytes)) => {
                    self.buf.extend_from_slice(&bytes);
                    self.read_frames()
                }
                Ok(None) => self.finish(),
                // The client's timeout bounds the whole response, body included.
                Err(e) => Err(ChatError::Unavailable(format!(
                    "{WHAT}: the stream broke off: {}",
                    crate::transport::error_chain(&e)
                ))),
            };
            if let Err(e) = step {
                self.failed = Some(e);
            }
        }
    }

    /// The events of every complete frame in the buffer.
    fn read_frames(&mut self) -> Result<(), ChatError> {
        loop {
            let before = self.buf.len();
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(message)) => {
                    self.in_frame = false;
                    self.event(&message)?;
                }
                Ok(DecodedFrame::Incomplete) => {
                    self.in_frame |= self.buf.len() < before;
                    if self.buf.len() > MAX_FRAME_BYTES {
                        return Err(ChatError::Failed(format!(
                            "{WHAT}: a frame longer than the format allows"
                        )));
                    }
                    return Ok(());
                }
                // A checksum or length that does not add up: the frames
                // after it cannot be found either.
                Err(e) => {
                    return Err(ChatError::Failed(format!(
                        "{WHAT}: an unreadable event-stream frame: {e}"
                    )));
                }
            }
        }
    }

    fn event(&mut self, message: &Message) -> Result<(), ChatError> {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| match h.value() {
                    HeaderValue::String(s) => Some(s.as_str()),
                    _ => None,
                })
        };
        match header(":message-type") {
            Some("event") => {}
            Some("exception") => {
                let kind = header(":exception-type").unwrap_or("unknownException");
                return Err(exception(kind, &payload_message(message.payload())));
            }
            // The protocol's own errors carry their code and message as headers.
            Some("error") => {
                let kind = header(":error-code").unwrap_or("unknownError");
                return Err(exception(kind, header(":error-message").unwrap_or("")));
            }
            other => {
                return Err(ChatError::Failed(format!(
                    "{WHAT}: a frame of unknown message type {other:?}"
                )));
            }
        }
        let payload = message.payload();
        let unexpected = |e: serde_json::Error| {
            ChatError::Failed(format!("{WHAT}: unexpected event payload ({e})"))
        };
        match header(":event-type") {
            Some("contentBlockDelta") => {
                let event: DeltaEvent = serde_json::from_slice(payload).map_err(unexpected)?;
                // Reasoning and tool-use deltas carry no answer text.
                if let Some(text) = event.delta.and_then(|d| d.text)
                    && !text.is_empty()
                {
                    self.text.push_str(&text);
                    self.queue.push_back(Piece::Text(text));
                }
            }
            Some("messageStop") => {
                let event: StopEvent = serde_json::from_slice(payload).map_err(unexpected)?;
                self.stop_reason = Some(event.stop_reason.unwrap_or_default());
            }
            Some("metadata") => {
                let event: MetadataEvent = serde_json::from_slice(payload).map_err(unexpected)?;
                self.usage = event.usage;
            }
            // messageStart, contentBlockStart/Stop, and events added later.
            _ => {}
        }
        Ok(())
    }

    /// The body's end: the answer is complete only if the model said it
    /// stopped and no frame was left half-read.
    fn finish(&mut self) -> Result<(), ChatError> {
        if self.in_frame || !self.buf.is_empty() {
            return Err(ChatError::Unavailable(format!(
                "{WHAT}: the stream ended inside a frame"
            )));
        }
        if self.stop_reason.is_none() {
            return Err(ChatError::Unavailable(format!(
                "{WHAT}: the stream ended before messageStop"
            )));
        }
        self.ended = true;
        let usage = self.usage.as_ref();
        self.queue.push_back(Piece::Usage(Usage {
            prompt_tokens: usage
                .and_then(|u| u.input_tokens)
                .unwrap_or(self.prompt_estimate),
            completion_tokens: usage
                .and_then(|u| u.output_tokens)
                .unwrap_or_else(|| token_count::count(&self.text) as u64),
        }));
        Ok(())
    }
}

/// An exception frame as an error: throttling, server-side and stream
/// failures are worth retrying later; validation, access and anything
/// unknown are not.
fn exception(kind: &str, message: &str) -> ChatError {
    let text = format!("{WHAT}: {kind}: {message}");
    let retryable = [
        "throttlingException",
        "internalServerException",
        "serviceUnavailableException",
        "modelStreamErrorException",
        "modelTimeoutException",
        "modelNotReadyException",
    ];
    if retryable.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
        ChatError::Unavailable(text)
    } else {
        ChatError::Failed(text)
    }
}

/// An exception's `message`, else its payload as text.
fn payload_message(payload: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        #[serde(alias = "Message")]
        message: String,
    }
    match serde_json::from_slice::<Body>(payload) {
        Ok(body) => crate::transport::truncate(&body.message),
        Err(_) => crate::transport::truncate(String::from_utf8_lossy(payload).trim()),
    }
}

#[derive(Deserialize)]
struct DeltaEvent {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopEvent {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct MetadataEvent {
    #[serde(default)]
    usage: Option<StreamUsage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}
