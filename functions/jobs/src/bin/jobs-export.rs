fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(jobs::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
