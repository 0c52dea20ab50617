fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(ingest::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
