//! `ragway-gateway`: the local API Gateway. Reads template.yaml, prints the
//! route table, serves every route on GATEWAY_ADDR and polls the ingest queue.

use std::sync::Arc;

use anyhow::Context;
use common::lambda::Handler;
use ragway_gateway::template::TemplateEvent;
use ragway_gateway::{Gateway, registry, sqs, template};

fn main() -> anyhow::Result<()> {
    // The in-process ingest worker starts copies of this binary to extract
    // files (extraction::isolate).
    extraction::isolate::serve_if_child();
    common::telemetry::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let template_path = std::env::var("RAGWAY_TEMPLATE").unwrap_or_else(|_| "template.yaml".into());
    let functions = template::load(template_path.as_ref())?;
    let mut gateway = Gateway::from_template(&functions, &registry())?;
    gateway.cors = template::load_cors(template_path.as_ref())?;
    let gateway = Arc::new(gateway);
    let config = common::secrets::load_config().await?;
    let addr = std::env::var("GATEWAY_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let state = Arc::new(common::state::State::new(config)?);

    for (function, consumer) in &gateway.queue_consumers {
        let Handler::Sqs(handler) = consumer.handler else {
            continue;
        };
        for event in &function.events {
            let TemplateEvent::Sqs { queue, batch_size } = event else {
                continue;
            };
            // The only queue the template declares is the ingest queue.
            let url = match queue.as_str() {
                "IngestQueue" => state.config.ingest_queue_url.clone(),
                _ => None,
            }
            .with_context(|| format!("no local URL for queue {queue} (set INGEST_QUEUE_URL)"))?;
            let timeout = function.timeout.map(std::time::Duration::from_secs);
            tokio::spawn(sqs::run(state.clone(), url, handler, *batch_size, timeout));
        }
    }

    for schedule in &gateway.schedules {
        tokio::spawn(ragway_gateway::schedule::run(
            state.clone(),
            schedule.clone(),
        ));
    }

    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!(
        "ragway gateway on http://{}\n{}",
        listener.local_addr()?,
        gateway.describe()
    );
    tokio::select! {
        served = gateway.serve(state, listener) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
