fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(auth::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
