//! The worker's side of [`extraction::isolate`]: a pool of extraction child
//! processes, each serving one file at a time. A child that dies or runs
//! out of time takes only its own file with it; the next file gets a new
//! child. Children are kept between files (the tokenizer takes ~100 ms to
//! load) and replaced after a large file, so one file's heap does not
//! stay with the next.
//!
//! The exchange with a child blocks a thread of the runtime's blocking
//! pool, not an async one, and uses plain `std::process` handles, which
//! belong to no runtime: a pool outlives the runtime that filled it
//! (each test has its own).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::IngestConfig;
use bytes::Bytes;
use extraction::chunk::Chunk;
use extraction::isolate::{self, Death, Reply, Request};

/// For the `main` of every binary that runs the worker: serves as an
/// extraction child when started as one ([`isolate::serve_if_child`]).
pub use extraction::isolate::serve_if_child;

/// What extracting a file came to.
#[derive(Debug)]
pub enum Extracted {
    Chunks(Vec<Chunk>),
    /// The file cannot be ingested; the reason is for its owner.
    Failed(String),
    /// Not the file's fault (the child could not start, the invocation
    /// ran out of time): try again later.
    Retry(anyhow::Error),
}

/// Most idle children kept (the worker prepares this many files at once).
const IDLE_MAX: usize = 4;
/// A child that has read a file this large is not reused.
const RECYCLE_AFTER_BYTES: usize = 4 * 1024 * 1024;
/// Nor one that has served this many. A new child loads the tokenizer
/// again (about 0.1 s of CPU), so this is high: large files, which are
/// what grows a heap, recycle their child at once anyway.
const RECYCLE_AFTER_FILES: u32 = 20_000;
/// Last bytes of a child's stderr kept to tell why it died.
const STDERR_TAIL: usize = 4096;

/// One child process and its pipes.
struct Worker {
    /// Shared with the pool's timeout path, which may kill it while a
    /// blocking thread waits on its pipes.
    process: Arc<Mutex<Child>>,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Drains the child's stderr and yields its tail once it closes.
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    served: u32,
}

impl Worker {
    fn exchange(&mut self, request: &Request, bytes: &[u8]) -> std::io::Result<Reply> {
        isolate::write_request(&mut self.stdin, request, bytes)?;
        isolate::read_reply(&mut self.stdout)
    }

    /// Why a child that stopped answering ended (blocks until it has).
    fn death(mut self, cpu_seconds: u64, memory: u64) -> Death {
        use std::os::unix::process::ExitStatusExt;
        // A child can break the exchange and live on (a garbled reply):
        // it gets a few seconds to end, then is killed.
        let mut status = None;
        for _ in 0..500 {
            match self.process.lock().map(|mut p| p.try_wait()) {
                Ok(Ok(Some(ended))) => {
                    status = Some(ended);
                    break;
                }
                Ok(Ok(None)) => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        if status.is_none()
            && let Ok(mut process) = self.process.lock()
        {
            let _ = process.kill();
            status = process.wait().ok();
        }
        // Its stderr closes with it: the tail holds its last words.
        let stderr = self
            .stderr
            .take()
            .and_then(|drain| drain.join().ok())
            .map(|tail| String::from_utf8_lossy(&tail).into_owned())
            .unwrap_or_default();
        Death::classify(
            status.and_then(|s| s.signal()),
            status.and_then(|s| s.code()),
            &stderr,
            cpu_seconds,
            memory,
        )
    }
}

impl Drop for Worker {
    /// No child outlives its handle, and none is left a zombie.
    fn drop(&mut self) {
        if let Ok(mut process) = self.process.lock() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

pub struct Extractors {
    program: PathBuf,
    memory_bytes: u64,
    idle: Mutex<Vec<Worker>>,
}

impl Extractors {
    /// A pool of children of `key`'s executable with its memory limit.
    pub fn new((program, memory_bytes): (PathBuf, u64)) -> Self {
        Self {
            program,
            memory_bytes,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// What tells pools apart: the executable started as child (this one
    /// unless `EXTRACTOR_PATH` names another) and the memory limit.
    pub fn key(config: &IngestConfig) -> std::io::Result<(PathBuf, u64)> {
        static THIS: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        let program = match &config.extractor_path {
            Some(path) => path.clone(),
            None => THIS
                .get_or_init(|| std::env::current_exe().ok())
                .clone()
                .ok_or_else(|| std::io::Error::other("the running executable has no path"))?,
        };
        Ok((program, config.extract_memory_bytes))
    }

    /// Extracts and chunks `bytes` in a child, within `request`'s bounds,
    /// at most `backstop` of real time (the file's fault past it), and
    /// within what is `left` of the invocation (not the file's fault).
    pub async fn run(
        self: &Arc<Self>,
        request: Request,
        bytes: Bytes,
        backstop: Duration,
        left: Option<Duration>,
    ) -> Extracted {
        let wall = left.map_or(backstop, |left| left.min(backstop));
        let size = bytes.len();
        let cpu_seconds = request.cpu_seconds;
        let mut worker = match self.take() {
            Some(worker) => worker,
            None => match self.spawn() {
                Ok(worker) => worker,
                Err(error) => return Extracted::Retry(error),
            },
        };
        let process = worker.process.clone();
        let pool = self.clone();
        let exchange =
            tokio::task::spawn_blocking(move || match worker.exchange(&request, &bytes) {
                Ok(reply) => {
                    worker.served += 1;
                    if size < RECYCLE_AFTER_BYTES && worker.served < RECYCLE_AFTER_FILES {
                        pool.give_back(worker);
                    }
                    Ok(reply)
                }
                Err(_broken) => Err(worker.death(cpu_seconds, pool.memory_bytes)),
            });
        match tokio::time::timeout(wall, exchange).await {
            Ok(Ok(Ok(reply))) => match reply {
                Reply::Chunks(chunks) => Extracted::Chunks(chunks),
                Reply::Failed(reason) => Extracted::Failed(reason),
                Reply::Error(error) => Extracted::Retry(anyhow::anyhow!("{error}")),
            },
            Ok(Ok(Err(Death::Internal(error)))) => {
                Extracted::Retry(anyhow::anyhow!("the extractor failed: {error}"))
            }
            Ok(Ok(Err(death))) => {
                tracing::warn!(?death, "an extraction child died");
                Extracted::Failed(death.reason())
            }
            Ok(Err(join)) => {
                Extracted::Retry(anyhow::anyhow!("the extraction thread failed: {join}"))
            }
            Err(_elapsed) => {
                // The blocked thread sees the pipes close and drops the
                // worker, which reaps it.
                // try_lock: never block an async thread; a child whose
                // lock is held is being reaped already.
                if let Ok(mut process) = process.try_lock() {
                    let _ = process.kill();
                }
                if wall < backstop {
                    return Extracted::Retry(anyhow::anyhow!(
                        "the invocation ran out of time while extracting"
                    ));
                }
                Extracted::Failed(
                    Death::Wall {
                        seconds: wall.as_secs(),
                    }
                    .reason(),
                )
            }
        }
    }

    fn take(&self) -> Option<Worker> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_MAX
        {
            idle.push(worker);
        }
    }

    fn spawn(&self) -> anyhow::Result<Worker> {
        let mut process = Command::new(&self.program)
            .env(isolate::CHILD_ENV, "1")
            .env(isolate::MEMORY_ENV, self.memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("starting the extractor {}: {e}", self.program.display())
            })?;
        let (Some(stdin), Some(stdout), Some(mut err)) = (
            process.stdin.take(),
            process.stdout.take(),
            process.stderr.take(),
        ) else {
            anyhow::bail!("the extractor's pipes were not opened");
        };
        // Drained all the time, so a chatty library cannot fill the pipe
        // and block the child.
        let stderr = std::thread::Builder::new()
            .name("extractor-stderr".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut tail = std::collections::VecDeque::with_capacity(2 * STDERR_TAIL);
                let mut buf = [0u8; 1024];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend(&buf[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
                tail.into_iter().collect()
            })?;
        Ok(Worker {
            process: Arc::new(Mutex::new(process)),
            stdin,
            stdout,
            stderr: Some(stderr),
            served: 0,
        })
    }
}
