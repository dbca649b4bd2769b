//! What the API's handlers share, and the bounds every request body obeys.

use std::{sync::Arc, time::Duration};

use crate::{broker::Broker, scale::ScaleMeter, store::Store};

use super::auth::Access;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most tasks in one batch request.
pub const MAX_BATCH: usize = 1000;

/// What the handlers share.
pub struct ApiState {
    pub broker: Broker,
    pub store: Store,
    /// Who may call which route.
    pub access: Arc<Access>,
    /// Checked by `/ready` when the fleet uses Redis.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// Serves `/v1/scale`.
    pub meter: Arc<ScaleMeter>,
    /// Live events for the dashboard (`/v1/events`).
    pub events: super::event_hub::EventHub,
    /// Where the dashboard links trace ids (`{trace_id}` replaced).
    pub trace_url: String,
    /// The legacy mirror's keys, when the fleet keeps it (`GET /v1/tasks/{id}/legacy`).
    pub legacy_keys: Option<crate::mirror::LegacyKeys>,
}

/// The state of the routes that may wait for outcomes.
#[derive(Clone)]
pub(super) struct Waiting {
    pub(super) api: Arc<ApiState>,
    /// Longest `?wait=` honoured (longer ones are cut to it).
    pub(super) max_wait: Duration,
}
