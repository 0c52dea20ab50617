fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(classify::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
