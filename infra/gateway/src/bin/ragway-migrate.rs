//! `ragway-migrate`: applies the embedded migrations to DATABASE_URL, then
//! builds the HNSW index for the configured embedding dimension
//! (EMBEDDING_DIMENSIONS, default 384) with HNSW_EF_CONSTRUCTION (default
//! 128). Run once per deploy (and by the local stack script).

fn main() -> anyhow::Result<()> {
    let url =
        std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("DATABASE_URL is not set"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        common::db::MIGRATOR.run(&pool).await?;
        let dimensions: usize = match std::env::var("EMBEDDING_DIMENSIONS") {
            Ok(raw) => raw.trim().parse()?,
            Err(_) => 384,
        };
        let ef_construction: u32 = match std::env::var("HNSW_EF_CONSTRUCTION") {
            Ok(raw) => raw.trim().parse()?,
            Err(_) => common::config::DEFAULT_HNSW_EF_CONSTRUCTION,
        };
        common::db::ensure_vector_index(&pool, dimensions, ef_construction).await?;
        println!(
            "migrations applied: {}",
            common::db::MIGRATOR.iter().count()
        );
        Ok(())
    })
}
