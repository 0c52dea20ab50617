fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(study::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
