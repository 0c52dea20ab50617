fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(keys::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
