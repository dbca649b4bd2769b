//! `swarmd api`: serve the HTTP API until ctrl-c or SIGTERM.

use std::sync::Arc;

use anyhow::Context;

use crate::{
    config::Settings,
    http::{self, api},
    scale::ScaleMeter,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen address (overrides SWARM_API_ADDR / api.addr).
    #[arg(long)]
    addr: Option<String>,
}

pub async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let (store, broker) = super::connect_fleet(&settings, true).await?;
    // Listings and replays read it before any worker may have made it.
    crate::dlq::DeadLetterStream::of(&broker)
        .ensure()
        .await
        .context("setting up the dead-letter stream")?;
    if settings.api.token.is_none() {
        tracing::warn!("no SWARM_API_TOKEN: anyone who reaches the API can publish");
    }
    let redis_used = settings.redis.mirror || settings.redis.intake || settings.redis.cache;
    let redis = redis_used
        .then(|| crate::mirror::connect(&settings.redis))
        .transpose()
        .context("connecting to Redis")?;
    let state = Arc::new(api::ApiState {
        broker,
        store,
        token: settings.api.token.clone(),
        redis,
        meter: Arc::new(ScaleMeter::new(settings.scale.clone())),
    });
    let addr = args.addr.unwrap_or(settings.api.addr);
    let (bound, server) = http::serve(&addr, api::router(state), super::shutdown_signal())
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!("API on http://{bound}");
    server.await.context("serving the API")?;
    Ok(())
}
