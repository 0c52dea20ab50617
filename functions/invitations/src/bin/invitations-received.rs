fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(invitations::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
