fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(chat::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
