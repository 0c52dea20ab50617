fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(workspaces::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
