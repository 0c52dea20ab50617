//! `ragway-migrate`: what the `database-migrate` function does on deploy
//! (`common::migrate`), from the command line: with DATABASE_ADMIN_URL,
//! the admin step (app role, `vector`, `ragway_search`, grants); then, as
//! DATABASE_URL's role, the migrations and the HNSW index for
//! EMBEDDING_DIMENSIONS (default 384) with HNSW_EF_CONSTRUCTION (default
//! 128). Either login may come from a secret (`NAME_SECRET_ARN`). The
//! local stack script runs it.

fn main() -> std::process::ExitCode {
    match migrate() {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("ragway-migrate: {reason}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The run's summary line, or why it failed (the cause chain, no password).
fn migrate() -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let settings = common::migrate::Settings::load(std::env::vars().collect())
            .await
            .map_err(|e| common::migrate::cause_chain(&e))?;
        let progress = common::migrate::Progress::default();
        match common::migrate::run(&settings, &progress).await {
            Ok(summary) => Ok(summary.describe()),
            Err(e) => Err(settings.redact(&common::migrate::cause_chain(&e))),
        }
    })
}
