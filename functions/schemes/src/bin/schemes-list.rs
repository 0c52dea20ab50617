fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(schemes::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
