fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(widgets::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
