fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(query::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
