//! An extraction child alone (extraction::isolate), for this crate's tests;
//! the worker and the local gateway serve as their own children.
fn main() {
    extraction::isolate::serve_if_child();
    eprintln!("ragway-extract serves the ingest worker; run it with RAGWAY_EXTRACT_CHILD=1");
    std::process::exit(2);
}
