fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(health::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
