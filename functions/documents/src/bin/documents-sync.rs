fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(documents::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
