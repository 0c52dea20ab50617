//! Ingestion's pure half: extracting text from uploaded files and cutting
//! it into token-aware chunks that remember where they came from. No I/O:
//! the worker fetches bytes and stores chunks. [`isolate`] runs the two in
//! a child process that limits its own memory and CPU time.
//!
//! [`format`], the list of formats read, is all there is without the
//! `extract` feature (on by default), for crates that only name formats.

pub mod format;

#[cfg(feature = "extract")]
pub mod chunk;
#[cfg(feature = "extract")]
pub mod extract;
#[cfg(all(feature = "extract", any(test, feature = "fixtures")))]
pub mod fixtures;
#[cfg(all(feature = "extract", any(test, feature = "fixtures")))]
pub mod hostile;
#[cfg(feature = "extract")]
pub mod isolate;
