fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(usage::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
