//! `swarmd api`: serve the HTTP API until ctrl-c or SIGTERM.

use std::sync::Arc;

use anyhow::Context;

use crate::{
    config::Settings,
    http::{self, api, auth::Access},
    scale::ScaleMeter,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen address (overrides SWARM_API_ADDR / api.addr).
    #[arg(long)]
    addr: Option<String>,
    /// Serve without authentication: anyone who reaches the port may read and write.
    /// For local experiments only; said at start and in `/health`.
    #[arg(long)]
    insecure_no_auth: bool,
}

pub async fn run(mut settings: Settings, args: Args) -> anyhow::Result<()> {
    settings.api.insecure_no_auth |= args.insecure_no_auth;
    let (store, broker) = super::connect_fleet(&settings, true).await?;
    // Listings and replays read it before any worker may have made it.
    crate::dlq::DeadLetterStream::of(&broker)
        .ensure()
        .await
        .context("setting up the dead-letter stream")?;
    let access = Access::from_settings(&settings.api).context("loading the API tokens")?;
    if access.is_insecure() {
        tracing::warn!(
            "INSECURE: API authentication is off (--insecure-no-auth): anyone who reaches \
             this port can read every task and dead letter, publish and replay"
        );
    }
    let redis_used = settings.redis.mirror || settings.redis.intake || settings.redis.cache;
    let redis = redis_used
        .then(|| crate::mirror::connect(&settings.redis))
        .transpose()
        .context("connecting to Redis")?;
    let state = Arc::new(api::ApiState {
        broker,
        store,
        access: Arc::new(access),
        redis,
        meter: Arc::new(ScaleMeter::new(settings.scale.clone())),
        events: Default::default(),
        trace_url: settings.api.trace_url.clone(),
        legacy_keys: settings
            .redis
            .mirror
            .then(|| crate::mirror::LegacyKeys::of(&settings.redis)),
    });
    let addr = args.addr.unwrap_or_else(|| settings.api.addr.clone());
    let limits = api::Limits::of(&settings.api)
        .context("api.request_timeout_secs must be a positive number of seconds")?;
    let (bound, server) = http::serve(&addr, api::router(state, limits), super::shutdown_signal())
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!("API on http://{bound}");
    server.await.context("serving the API")?;
    Ok(())
}
