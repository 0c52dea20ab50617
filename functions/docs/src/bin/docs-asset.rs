fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(docs::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
