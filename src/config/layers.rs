//! The three layers, each read through the settings table: its defaults, then a TOML file,
//! then `SWARM_*` environment variables.

use std::path::Path;

use super::{
    ConfigError, Settings,
    table::{Kind, SETTINGS, Setting, by_key},
};

impl Default for Settings {
    /// The table's defaults.
    fn default() -> Self {
        let mut settings = Settings::blank();
        for setting in SETTINGS {
            if let Some(default) = setting.default {
                (setting.set)(&mut settings, default)
                    .unwrap_or_else(|e| panic!("default of {} does not parse: {e}", setting.key));
            }
        }
        settings
    }
}

impl Settings {
    /// Defaults, then `file` (TOML) if given, then the process environment.
    ///
    /// Fails when the file cannot be read or parsed, or a value is malformed.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            settings
                .apply_toml(&text)
                .map_err(|error| error.in_file(path))?;
        }
        settings.apply_env(|name| std::env::var(name).ok())?;
        settings.validate()?;
        Ok(settings)
    }

    /// Overrides from a TOML document: `[section]` tables whose keys are the table's.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let document: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
            path: String::new(),
            source: Box::new(source),
        })?;
        for (section, fields) in document {
            let toml::Value::Table(fields) = fields else {
                return Err(ConfigError::UnknownKey { key: section });
            };
            if section == "agents" {
                self.agents =
                    super::agents::parse(fields).map_err(|reason| ConfigError::Agents {
                        path: String::new(),
                        reason,
                    })?;
                continue;
            }
            for (field, value) in fields {
                let key = format!("{section}.{field}");
                let setting = by_key(&key).ok_or(ConfigError::UnknownKey { key: key.clone() })?;
                let text = as_text(&value, setting.kind).map_err(|reason| ConfigError::File {
                    key: setting.key,
                    path: String::new(),
                    reason,
                })?;
                (setting.set)(self, &text).map_err(|reason| ConfigError::File {
                    key: setting.key,
                    path: String::new(),
                    reason,
                })?;
            }
        }
        Ok(())
    }

    /// Overrides from `SWARM_*` variables, read through `lookup` so tests need no process env.
    /// An empty variable counts as unset, unless emptiness means "off" for that setting.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            let Some(value) = lookup(setting.env) else {
                continue;
            };
            if value.is_empty() && !setting.empty_allowed {
                continue;
            }
            (setting.set)(self, &value).map_err(|reason| env_error(setting, value, reason))?;
        }
        Ok(())
    }
}

fn env_error(setting: &Setting, value: String, reason: String) -> ConfigError {
    ConfigError::Env {
        name: setting.env,
        value: if setting.kind.is_secret() {
            "***".into()
        } else {
            value
        },
        reason,
    }
}

/// A TOML value as the text the environment would carry: lists comma separated, a table
/// as `name=value` pairs. An array is taken only where the setting is a list, a table only
/// where it is a map.
fn as_text(value: &toml::Value, kind: Kind) -> Result<String, String> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected a single value, got {}", other.type_str())),
    };
    let list = matches!(kind, Kind::List | Kind::UrlList | Kind::SecretList);
    match value {
        toml::Value::Array(_) if !list => Err(format!("expected one {}, got a list", kind.name())),
        toml::Value::Table(_) if kind != Kind::Map => {
            Err(format!("expected one {}, got a table", kind.name()))
        }
        toml::Value::Array(items) => Ok(items
            .iter()
            .map(scalar)
            .collect::<Result<Vec<_>, _>>()?
            .join(",")),
        toml::Value::Table(pairs) => Ok(pairs
            .iter()
            .map(|(name, value)| Ok(format!("{name}={}", scalar(value)?)))
            .collect::<Result<Vec<_>, String>>()?
            .join(",")),
        other => scalar(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Concurrency;

    #[test]
    fn tokens_never_print() {
        let mut settings = Settings::default();
        settings
            .apply_env(|name| match name {
                "SWARM_API_TOKEN" => Some("tok-write-1, tok-write-2".into()),
                "SWARM_API_READ_TOKENS" => Some("tok-read".into()),
                "SWARM_NATS_TOKEN" => Some("tok-nats".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(settings.api.write_tokens.len(), 2);
        assert_eq!(settings.api.write_tokens[1].expose(), "tok-write-2");
        let shown = format!("{settings:?}");
        for secret in ["tok-write-1", "tok-write-2", "tok-read", "tok-nats"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn an_empty_api_token_is_refused() {
        let mut settings = Settings::default();
        settings
            .apply_env(|name| (name == "SWARM_API_TOKEN").then(|| "good, ".to_string()))
            .unwrap();
        assert!(matches!(
            settings.validate(),
            Err(ConfigError::Invalid {
                name: "api.write_tokens",
                ..
            })
        ));
    }

    #[test]
    fn environment_overrides_defaults() {
        let mut settings = Settings::default();
        settings
            .apply_env(|name| match name {
                "SWARM_STREAM" => Some("OTHER".into()),
                "SWARM_CONCURRENCY" => Some("7".into()),
                "SWARM_COMMIT_LINGER_MS" => Some("5".into()),
                "SWARM_CACHE_TTL_SECS" => Some("email=60, review=600".into()),
                "SWARM_METRICS_ADDR" => Some(String::new()),
                "SWARM_API_ADDR" => Some(String::new()),
                _ => None,
            })
            .unwrap();
        assert_eq!(settings.nats.stream, "OTHER");
        assert_eq!(settings.worker.concurrency, Concurrency::Fixed(7));
        assert_eq!(settings.worker.commit_linger_ms, 5);
        assert_eq!(settings.redis.cache_ttl_secs["review"], 600);
        assert_eq!(settings.worker.metrics_addr, "", "empty turns metrics off");
        assert_eq!(settings.api.addr, "0.0.0.0:8080", "empty is unset here");
    }

    #[test]
    fn pools_and_automatic_concurrency_come_from_the_environment_or_the_file() {
        let mut settings = Settings::default();
        settings
            .apply_env(|name| match name {
                "SWARM_CONCURRENCY" => Some("auto".into()),
                "SWARM_WORKER_AGENTS" => Some("email, quality".into()),
                "SWARM_SCALE_CPU_PERCENT" => Some("60".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(settings.worker.concurrency, Concurrency::Auto);
        assert_eq!(
            settings.worker.agent_filter().unwrap().to_string(),
            "only email,quality"
        );
        assert_eq!(settings.scale.cpu_percent, 60.0);
        settings.validate().unwrap();
        settings.worker.exclude_agents = vec!["echo".into()];
        assert!(settings.validate().is_err(), "both lists at once");

        let mut file = Settings::default();
        file.apply_toml(
            "[worker]\nconcurrency = \"auto\"\nexclude_agents = [\"email\"]\n\
             [scale]\nbacklog_per_worker = 50\n[redis.cache_ttl_secs]\nemail = 30\n",
        )
        .unwrap();
        assert_eq!(file.worker.concurrency, Concurrency::Auto);
        assert_eq!(file.worker.exclude_agents, ["email"]);
        assert_eq!(file.scale.backlog_per_worker, 50.0);
        assert_eq!(file.redis.cache_ttl_secs["email"], 30);
        let refused = Settings::default()
            .apply_toml("[worker]\nconcurrency = \"lots\"\n")
            .unwrap_err();
        assert!(matches!(
            refused,
            ConfigError::File {
                key: "worker.concurrency",
                ..
            }
        ));
    }

    #[test]
    fn file_settings_parse_and_unknown_keys_are_refused() {
        let mut settings = Settings::default();
        settings
            .apply_toml("[nats]\nstream = \"S\"\n[worker]\nconcurrency = 3\n")
            .unwrap();
        assert_eq!(settings.nats.stream, "S");
        assert_eq!(settings.worker.concurrency, Concurrency::Fixed(3));
        assert_eq!(settings.nats.subject_prefix, "swarm");
        for shape in [
            "[nats]\nstream = [\"S\", \"T\"]\n",
            "[nats.stream]\nx = 1\n",
        ] {
            assert!(
                matches!(
                    Settings::default().apply_toml(shape),
                    Err(ConfigError::File {
                        key: "nats.stream",
                        ..
                    })
                ),
                "{shape}"
            );
        }
        for wrong in [
            "[nats]\nstreem = \"S\"\n",
            "[natz]\nstream = \"S\"\n",
            "x = 1\n",
        ] {
            assert!(
                matches!(
                    Settings::default().apply_toml(wrong),
                    Err(ConfigError::UnknownKey { .. })
                ),
                "{wrong}"
            );
        }
    }

    #[test]
    fn malformed_values_are_errors_that_never_echo_a_secret() {
        let err = Settings::default()
            .apply_env(|name| (name == "SWARM_CONCURRENCY").then(|| "many".into()))
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Env {
                name: "SWARM_CONCURRENCY",
                ..
            }
        ));
        // No secret setting can fail to parse today; the masking is the table's promise.
        let secret = SETTINGS.iter().find(|s| s.kind == Kind::Secret).unwrap();
        let shown = env_error(secret, "hunter2".into(), "bad".into()).to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn every_setting_has_one_key_one_variable_and_a_default_that_round_trips() {
        let mut keys = std::collections::BTreeSet::new();
        let mut variables = std::collections::BTreeSet::new();
        for setting in SETTINGS {
            assert!(keys.insert(setting.key), "{} twice", setting.key);
            assert!(variables.insert(setting.env), "{} twice", setting.env);
            assert!(setting.env.starts_with("SWARM_"), "{}", setting.env);
            assert!(
                setting.default.is_none() || !setting.kind.is_secret(),
                "a secret has no default"
            );
            // Through the environment and through the file, the default changes nothing.
            if let Some(default) = setting.default {
                let mut through_env = Settings::default();
                through_env
                    .apply_env(|name| (name == setting.env).then(|| default.to_string()))
                    .unwrap();
                assert_eq!(
                    format!("{through_env:?}"),
                    format!("{:?}", Settings::default()),
                    "{}",
                    setting.key
                );
                let (section, field) = setting.key.split_once('.').unwrap();
                let mut through_file = Settings::default();
                through_file
                    .apply_toml(&format!("[{section}]\n{field} = {default:?}\n"))
                    .unwrap_or_else(|e| panic!("{}: {e}", setting.key));
                assert_eq!(
                    format!("{through_file:?}"),
                    format!("{:?}", Settings::default())
                );
            }
        }
    }

    #[test]
    fn every_field_of_every_section_is_in_the_table() {
        let tree = format!("{:#?}", Settings::default());
        let mut section = "";
        let mut missing = Vec::new();
        for line in tree.lines() {
            let depth = line.len() - line.trim_start().len();
            let Some((name, _)) = line.trim_start().split_once(':') else {
                continue;
            };
            match depth {
                4 => section = name,
                8 if by_key(&format!("{section}.{name}")).is_none() => {
                    missing.push(format!("{section}.{name}"))
                }
                _ => {}
            }
        }
        assert!(
            missing.is_empty(),
            "settings without a table entry: {missing:?}"
        );
        assert!(SETTINGS.len() > 70);
    }
}
