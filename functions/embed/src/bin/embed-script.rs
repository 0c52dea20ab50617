fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(embed::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
