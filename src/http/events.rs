//! `GET /v1/events`: live updates for the dashboard as server-sent events, pushed rather
//! than polled per viewer, from the process's one [`EventHub`](super::event_hub::EventHub).

use std::{convert::Infallible, sync::Arc};

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::Stream;
use serde_json::Value;
use tokio::sync::broadcast;

use super::state::ApiState;

/// `GET /v1/events`.
pub(super) async fn events(State(state): State<Arc<ApiState>>) -> Response {
    let receiver = state.events.subscribe(&state.broker, &state.store);
    Sse::new(stream_of(receiver))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn stream_of(
    receiver: broadcast::Receiver<(String, Value)>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok((kind, data)) => {
                    let event = Event::default().event(kind).data(data.to_string());
                    return Some((Ok(event), receiver));
                }
                // Fell behind: the next overview brings it up to date.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
