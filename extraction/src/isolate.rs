//! Extraction and chunking in a child process, so that no file can take
//! the worker down with it.
//!
//! Parsers of hostile files can recurse without end (a PDF form that draws
//! itself overflows the stack, which aborts the whole process and cannot
//! be caught), run for minutes (quadratic nesting, XObject fan-out) or
//! inflate into gigabytes. The worker therefore hands each file to a
//! long-lived child process, a copy of its own executable started with
//! [`CHILD_ENV`] set, that serves requests one at a time over its stdin
//! and a private copy of its stdout. The child limits itself: its data
//! segment to [`MEMORY_ENV`] bytes (`RLIMIT_DATA`, so an allocation past
//! it fails and the child aborts) and, per request, its CPU time to the
//! request's budget (`RLIMIT_CPU`, so the kernel ends it with `SIGXCPU`).
//! The parent sees the child die, says why in words a person understands
//! ([`Death::reason`]), and starts another for the next file.
//!
//! Framing (both directions little-endian): a request is a `u32` header
//! length, the JSON [`Request`], then [`Request::len`] raw bytes; a reply
//! is a `u64` length and the JSON [`Reply`].

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::{Deserialize, Serialize};

use crate::chunk::{Chunk, ChunkSpec, Chunker};
use crate::extract::{self, Format};

/// Set in a child's environment: the process serves extraction requests
/// ([`serve_if_child`]) instead of running its own `main`.
pub const CHILD_ENV: &str = "RAGWAY_EXTRACT_CHILD";
/// The child's data-segment limit in bytes.
pub const MEMORY_ENV: &str = "RAGWAY_EXTRACT_MEMORY";

/// One file to extract and chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The declared MIME type.
    pub content_type: String,
    /// An uploaded file (checked against its declared type, which must be
    /// one we read) rather than inline text (read as plain text when its
    /// type is unknown).
    pub upload: bool,
    pub max_tokens: usize,
    pub overlap_tokens: usize,
    /// Most chunks the document may make.
    pub max_chunks: usize,
    /// Most bytes of extracted text.
    pub max_text_bytes: usize,
    /// CPU seconds the child may spend on this request.
    pub cpu_seconds: u64,
    /// Length of the file's bytes that follow the header ([`write_request`]
    /// sets it).
    pub len: u64,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The document's chunks, in order.
    Chunks(Vec<Chunk>),
    /// The file cannot be ingested; the reason is for its owner.
    Failed(String),
    /// Something of ours went wrong (not the file's fault): try again.
    Error(String),
}

/// The request's header, framed.
pub fn encode_request(request: &Request) -> Vec<u8> {
    let json = serde_json::to_vec(request).expect("a request serialises");
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// A reply, framed.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let json = serde_json::to_vec(reply).expect("a reply serialises");
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Longest reply a parent reads: a length past it is a garbled frame,
/// not a reason to allocate that much (32 MB of text, escaped as JSON,
/// stays far below).
pub const MAX_REPLY_BYTES: u64 = 512 * 1024 * 1024;

/// Sends one request: its header, then the file's bytes.
pub fn write_request(to: &mut impl Write, request: &Request, bytes: &[u8]) -> io::Result<()> {
    let request = Request {
        len: bytes.len() as u64,
        ..request.clone()
    };
    to.write_all(&encode_request(&request))?;
    to.write_all(bytes)?;
    to.flush()
}

/// Reads one framed reply.
pub fn read_reply(from: &mut impl Read) -> io::Result<Reply> {
    let mut len = [0u8; 8];
    from.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_REPLY_BYTES {
        return Err(io::Error::other(format!("a reply of {len} bytes")));
    }
    let mut reply = vec![0u8; len as usize];
    from.read_exact(&mut reply)?;
    serde_json::from_slice(&reply).map_err(io::Error::other)
}

/// A child's exit code when it failed for a reason of its own (a pipe, a
/// limit it could not set), not the file's: the file is tried again.
pub const INTERNAL_EXIT: i32 = 70;

/// How a child ended a request without replying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    /// Ran past its CPU budget (`SIGXCPU`).
    Cpu { seconds: u64 },
    /// Ran past the wall-clock backstop and was killed.
    Wall { seconds: u64 },
    /// Overflowed its stack: nesting without end.
    Stack,
    /// An allocation past the memory limit failed.
    Memory { bytes: u64 },
    /// Any other end: a signal or an exit code, and the end of its stderr.
    Other(String),
    /// It failed for a reason of its own ([`INTERNAL_EXIT`]).
    Internal(String),
}

impl Death {
    /// Classifies a child's end from its signal (if any), exit code and
    /// the last of what it wrote to stderr (the Rust runtime's words for
    /// stack overflows and failed allocations).
    pub fn classify(
        signal: Option<i32>,
        code: Option<i32>,
        stderr: &str,
        cpu_seconds: u64,
        memory: u64,
    ) -> Death {
        if stderr.contains("has overflowed its stack") {
            Death::Stack
        } else if stderr.contains("memory allocation of") {
            Death::Memory { bytes: memory }
        } else if code == Some(INTERNAL_EXIT) {
            Death::Internal(stderr.trim().to_owned())
        } else if signal == Some(libc::SIGXCPU) {
            Death::Cpu {
                seconds: cpu_seconds,
            }
        } else {
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            let how = match (signal, code) {
                (Some(s), _) => format!("signal {s}"),
                (None, Some(c)) => format!("exit code {c}"),
                (None, None) => "an unknown end".to_owned(),
            };
            Death::Other(match last {
                Some(line) => format!("{how}: {}", line.trim()),
                None => how,
            })
        }
    }

    /// Why the document failed, for its owner.
    pub fn reason(&self) -> String {
        match self {
            Death::Cpu { seconds } => format!(
                "extraction took longer than {seconds} s of CPU time, the most a file of this size may take"
            ),
            Death::Wall { seconds } => {
                format!("extraction did not finish within {seconds} s")
            }
            Death::Stack => {
                "the file is nested too deeply to extract (its structure refers to itself or nests without end)".to_owned()
            }
            Death::Memory { bytes } => format!(
                "extracting the file needed more than {} MB of memory",
                bytes / (1024 * 1024)
            ),
            Death::Other(how) => format!("the extractor stopped on this file ({how})"),
            Death::Internal(error) => format!("the extractor failed: {error}"),
        }
    }
}

/// What [`run_once`] measured of a child.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub wall: std::time::Duration,
    pub cpu: std::time::Duration,
    /// Peak resident set of the child, in bytes.
    pub peak_rss: u64,
}

/// Runs one request in a fresh child of `program` and waits for it to
/// end, measuring it; for benchmarks and tests (the worker keeps its
/// children, see the ingest crate's extractor pool).
pub fn run_once(
    program: &std::path::Path,
    request: &Request,
    bytes: &[u8],
    memory: u64,
) -> io::Result<(Result<Reply, Death>, Usage)> {
    use std::process::{Command, Stdio};
    let started = std::time::Instant::now();
    let mut child = Command::new(program)
        .env(CHILD_ENV, "1")
        .env(MEMORY_ENV, memory.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (mut stdin, mut stdout, mut stderr) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let cpu_seconds = request.cpu_seconds;
    let (request, body) = (request.clone(), bytes.to_vec());
    let writer = std::thread::spawn(move || {
        // A child that dies early closes the pipe: that is its answer.
        // Dropping stdin afterwards ends the child after its one reply.
        let _ = write_request(&mut stdin, &request, &body);
    });
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text[text.len().saturating_sub(4096)..]).into_owned()
    });
    // The kernel's peak RSS of a child (wait4's ru_maxrss) includes the
    // parent's, which the child's address space started as; /proc's
    // VmHWM is the child's own. Sampled until the child is gone.
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Some(hwm) = vm_hwm(pid) {
            peak = peak.max(hwm);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        peak
    });
    let reply = read_reply(&mut stdout);
    let _ = writer.join();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child, filling structs we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    let measured = Usage {
        wall: started.elapsed(),
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        peak_rss: sampler.join().unwrap_or(0),
    };
    let stderr = errors.join().unwrap_or_default();
    let outcome = if let Ok(reply) = reply {
        reply
    } else {
        let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        return Ok((
            Err(Death::classify(signal, code, &stderr, cpu_seconds, memory)),
            measured,
        ));
    };
    Ok((Ok(outcome), measured))
}

/// A live process's peak resident set in bytes; `None` once it has ended.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// If this process was started as an extraction child, serves requests
/// until stdin closes and exits; otherwise returns at once. Call first
/// thing in `main` of every binary that runs the ingest worker.
pub fn serve_if_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let code = match serve() {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("extractor: {error}");
            INTERNAL_EXIT
        }
    };
    std::process::exit(code);
}

fn serve() -> io::Result<()> {
    let memory = std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(bytes) = memory {
        set_limit(libc::RLIMIT_DATA, bytes, bytes)?;
    }
    set_limit(libc::RLIMIT_CORE, 0, 0)?;
    let mut replies = private_stdout()?;
    let mut input = io::stdin().lock();
    let mut chunkers: HashMap<(usize, usize), Chunker> = HashMap::new();
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut header = vec![0u8; u32::from_le_bytes(len) as usize];
        input.read_exact(&mut header)?;
        let request: Request = serde_json::from_slice(&header).map_err(io::Error::other)?;
        let mut bytes = vec![0u8; request.len as usize];
        input.read_exact(&mut bytes)?;
        limit_cpu(request.cpu_seconds)?;
        let reply = catch_unwind(AssertUnwindSafe(|| handle(&request, &bytes, &mut chunkers)))
            .unwrap_or_else(|panic| {
                let detail = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown error".to_owned());
                Reply::Failed(format!("the file could not be read ({detail})"))
            });
        drop(bytes);
        replies.write_all(&encode_reply(&reply))?;
        replies.flush()?;
    }
}

/// Extracts and chunks one file, within the request's bounds.
pub fn handle(
    request: &Request,
    bytes: &[u8],
    chunkers: &mut HashMap<(usize, usize), Chunker>,
) -> Reply {
    let declared = Format::from_content_type(&request.content_type);
    let format = if request.upload {
        if let Some(mismatch) = type_mismatch(bytes, declared, &request.content_type) {
            return Reply::Failed(mismatch);
        }
        match declared {
            Some(format) => format,
            None => {
                return Reply::Failed(format!("{} files cannot be read", request.content_type));
            }
        }
    } else {
        declared.unwrap_or(Format::PlainText)
    };
    let sections = match extract::extract(bytes, format) {
        Ok(sections) => sections,
        Err(error) => return Reply::Failed(error.to_string()),
    };
    let text: usize = sections.iter().map(|s| s.text.len()).sum();
    if text > request.max_text_bytes {
        return Reply::Failed(format!(
            "the document holds more than {} MB of text, the most one document may hold",
            request.max_text_bytes / (1024 * 1024)
        ));
    }
    let spec = (request.max_tokens, request.overlap_tokens);
    let chunker = match chunkers.entry(spec) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => match Chunker::new(ChunkSpec {
            max_tokens: spec.0,
            overlap_tokens: spec.1,
        }) {
            Ok(chunker) => e.insert(chunker),
            Err(error) => return Reply::Error(format!("building the chunker: {error}")),
        },
    };
    let chunks = chunker.chunk(&sections);
    drop(sections);
    if chunks.len() > request.max_chunks {
        return Reply::Failed(format!(
            "the document makes more than {} chunks, the most one document may have",
            request.max_chunks
        ));
    }
    Reply::Chunks(chunks)
}

/// A readable reason when the bytes are evidently not the declared type
/// (a PDF declared as text, an image or spreadsheet declared as anything).
fn type_mismatch(bytes: &[u8], declared: Option<Format>, declared_type: &str) -> Option<String> {
    match extract::sniff(bytes) {
        Ok(None) => None,
        Ok(Some(real)) if Some(real) == declared => None,
        Ok(Some(real)) => Some(format!(
            "the file is {} but was declared {declared_type}",
            real.mime()
        )),
        Err(unsupported) => Some(format!("{unsupported} (declared {declared_type})")),
    }
}

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass and changes only limits.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the kernel end this process with `SIGXCPU` once it has spent
/// `seconds` more of CPU time (`RLIMIT_CPU` counts the whole life of the
/// process, so the limit moves with each request).
fn limit_cpu(seconds: u64) -> io::Result<()> {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let used = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) as u64 + 1;
    // Only the soft limit moves: raising a hard limit needs privileges,
    // and SIGXCPU's default action ends the process anyway.
    // SAFETY: getrlimit fills the struct we own.
    let mut current: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_CPU, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let soft = (used + seconds.max(1)).min(current.rlim_max as u64);
    set_limit(libc::RLIMIT_CPU, soft, current.rlim_max as u64)
}

/// The replies go to a private copy of stdout, and stdout itself now
/// points at stderr: a library that prints cannot corrupt the framing.
fn private_stdout() -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: dup and dup2 on the standard descriptors; the new descriptor
    // is owned by the returned File alone.
    unsafe {
        let fd = libc::dup(1);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::dup2(2, 1) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content_type: &str, upload: bool, bytes: &[u8]) -> Request {
        Request {
            content_type: content_type.into(),
            upload,
            max_tokens: 64,
            overlap_tokens: 8,
            max_chunks: 4,
            max_text_bytes: 4096,
            cpu_seconds: 5,
            len: bytes.len() as u64,
        }
    }

    fn run(content_type: &str, upload: bool, bytes: &[u8]) -> Reply {
        handle(
            &request(content_type, upload, bytes),
            bytes,
            &mut HashMap::new(),
        )
    }

    #[test]
    fn text_becomes_chunks() {
        let Reply::Chunks(chunks) = run("text/plain", true, b"Hello there.\n\nSecond part.") else {
            panic!("expected chunks");
        };
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].content.contains("Second part."));
    }

    #[test]
    fn bounds_fail_with_their_reason() {
        let many = "word ".repeat(600);
        match run("text/plain", false, many.as_bytes()) {
            Reply::Failed(reason) => assert!(reason.contains("more than 4 chunks"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(5000);
        match run("text/plain", false, long.as_bytes()) {
            Reply::Failed(reason) => assert!(reason.contains("MB of text"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uploads_are_checked_against_their_type_and_inline_text_is_not() {
        match run("text/plain", true, b"%PDF-1.4 not really") {
            Reply::Failed(reason) => assert!(reason.contains("declared text/plain"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match run("image/png", true, b"plain words") {
            Reply::Failed(reason) => assert!(reason.contains("cannot be read"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run("application/x-unknown", false, b"plain words"),
            Reply::Chunks(_)
        ));
    }

    #[test]
    fn deaths_are_told_in_words() {
        let stack = "\nthread 'main' has overflowed its stack\nfatal runtime error: stack overflow";
        assert_eq!(
            Death::classify(Some(libc::SIGABRT), None, stack, 5, 1 << 20),
            Death::Stack
        );
        let memory = "memory allocation of 1048576 bytes failed\n";
        assert!(
            Death::classify(Some(libc::SIGABRT), None, memory, 5, 256 << 20)
                .reason()
                .contains("more than 256 MB")
        );
        assert_eq!(
            Death::classify(Some(libc::SIGXCPU), None, "", 7, 1),
            Death::Cpu { seconds: 7 }
        );
        assert!(
            Death::classify(None, Some(3), "boom\n", 1, 1)
                .reason()
                .contains("exit code 3: boom")
        );
    }

    #[test]
    fn frames_carry_their_length() {
        let request = request("text/plain", true, b"abc");
        let framed = encode_request(&request);
        let len = u32::from_le_bytes(framed[..4].try_into().unwrap()) as usize;
        let back: Request = serde_json::from_slice(&framed[4..4 + len]).unwrap();
        assert_eq!(back.len, 3);
        let huge = (MAX_REPLY_BYTES + 1).to_le_bytes();
        assert!(
            read_reply(&mut &huge[..]).is_err(),
            "refused, not allocated"
        );
        let mut sent = Vec::new();
        write_request(&mut sent, &request, b"abcd").unwrap();
        assert_eq!(sent.len(), framed.len() + 4);
        let reply = encode_reply(&Reply::Failed("no".into()));
        assert_eq!(
            read_reply(&mut &reply[..]).unwrap(),
            Reply::Failed("no".into())
        );
        assert_eq!(
            u64::from_le_bytes(reply[..8].try_into().unwrap()) as usize,
            reply.len() - 8
        );
    }
}
