fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(uploads::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
