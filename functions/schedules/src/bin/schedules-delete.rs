fn main() -> Result<(), common::lambda_http::Error> {
    common::lambda::serve(schedules::FUNCTIONS, env!("CARGO_BIN_NAME"))
}
