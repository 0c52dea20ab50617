fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(ai::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
