fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(shares::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
