fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(database::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
