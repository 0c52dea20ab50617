//! Ingestion's pure half: extracting text from uploaded files and cutting
//! it into token-aware chunks that remember where they came from. No I/O:
//! the worker fetches bytes and stores chunks. [`isolate`] runs the two in
//! a child process that limits its own memory and CPU time.

pub mod chunk;
pub mod extract;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
#[cfg(any(test, feature = "fixtures"))]
pub mod hostile;
pub mod isolate;
