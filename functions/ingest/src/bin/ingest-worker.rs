fn main() -> Result<(), common::lambda_http::Error> {
    // The worker starts copies of itself to extract files.
    common::ingest::extractor::serve_if_child();
    common::lambda::serve(ingest::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
