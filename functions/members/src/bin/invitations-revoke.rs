fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(members::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
