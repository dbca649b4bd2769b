//! Bringing a stream to the configuration the fleet asks for, changing the server only when
//! something differs: a process whose NATS user may read streams but not manage them (a
//! worker or a publisher under `deploy/nats/roles.conf`) starts against streams an admin
//! (`swarmd migrate`) already set up.

use async_nats::jetstream::{self, stream::Config};

/// Creates the stream `wanted.name`, or updates the fields the fleet sets when one differs.
///
/// Fails with the server's reason when the stream cannot be read, created or updated.
pub(crate) async fn ensure(
    jetstream: &jetstream::Context,
    wanted: Config,
) -> Result<(), super::NatsError> {
    match jetstream.get_stream(&wanted.name).await {
        Ok(stream) => {
            // `get_stream` just read the settings: no second request.
            let current = stream.cached_info().config.clone();
            let merged = with_fleet_fields(current.clone(), &wanted);
            if merged != current {
                tracing::debug!(?current, ?merged, "stream settings differ; updating");
                jetstream
                    .update_stream(&merged)
                    .await
                    .map_err(super::NatsError::from)?;
            }
            Ok(())
        }
        Err(_) => match jetstream.create_stream(wanted.clone()).await {
            Ok(_) => Ok(()),
            // Another process may have created it meanwhile.
            Err(create) => jetstream
                .get_stream(&wanted.name)
                .await
                .map(|_| ())
                .map_err(|_| create.into()),
        },
    }
}

/// `current` with the fields the fleet sets taken from `wanted`; the server's other
/// settings (limits it filled in, an operator's additions) stay.
fn with_fleet_fields(mut current: Config, wanted: &Config) -> Config {
    current.subjects = wanted.subjects.clone();
    current.retention = wanted.retention;
    current.storage = wanted.storage;
    current.discard = wanted.discard;
    current.duplicate_window = wanted.duplicate_window;
    // Unset (0) means "the server's default", which the server reports as -1.
    if wanted.max_message_size != 0 {
        current.max_message_size = wanted.max_message_size;
    }
    current.max_age = wanted.max_age;
    current.num_replicas = wanted.num_replicas;
    current.allow_direct = wanted.allow_direct;
    current.republish = wanted.republish.clone();
    current.description = wanted.description.clone();
    // Never turned off once on: tasks held by the server's schedules still wait there.
    current.allow_message_schedules |= wanted.allow_message_schedules;
    current
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_the_fleets_fields_are_compared_and_changed() {
        let wanted = Config {
            name: "S".into(),
            subjects: vec!["a.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let server = Config {
            max_messages: -1,
            max_bytes: -1,
            ..wanted.clone()
        };
        assert_eq!(with_fleet_fields(server.clone(), &wanted), server);
        let unlimited = Config {
            max_message_size: -1,
            ..server.clone()
        };
        assert_eq!(
            with_fleet_fields(unlimited.clone(), &wanted),
            unlimited,
            "an unset limit is the server's default, not a difference"
        );
        let stale = Config {
            duplicate_window: Duration::from_secs(60),
            ..server.clone()
        };
        let merged = with_fleet_fields(stale.clone(), &wanted);
        assert_ne!(merged, stale);
        assert_eq!(merged.max_messages, -1, "the server's own settings stay");
    }
}
