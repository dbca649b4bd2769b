//! The users' own agents, declared in the settings file as `[agents.<name>]` tables: a
//! long-lived child process speaking the line protocol of `schemas/agent-protocol.md`
//! (`command = ["python3", "-m", "swarmd.agent", "mypkg.agents:EmailAgent"]`), or an HTTP
//! endpoint each task is POSTed to (`url = "http://agents.internal:9000/email"`). One
//! declared under a built-in's name replaces it. Not in the settings table: their names are
//! the user's, so they have no fixed key or variable.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::Secret;

/// Most processes one agent may keep per worker process.
pub const MAX_PROCESSES: usize = 256;

/// One declared agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// The `agent_type` it serves.
    pub name: String,
    pub kind: AgentKind,
    /// How long one attempt may run unless the task says otherwise (else the worker's
    /// `default_timeout_secs`).
    pub timeout: Option<Duration>,
}

/// How the worker reaches the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentKind {
    Process(ProcessSpec),
    Http(HttpSpec),
}

impl AgentKind {
    /// As the roll call and the dashboard name it.
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentKind::Process(_) => "process",
            AgentKind::Http(_) => "http",
        }
    }
}

/// An endpoint each task is POSTed to.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// `http://host[:port]/path`.
    pub url: String,
    /// Requests at once per worker process (and keep-alive connections kept).
    pub concurrency: usize,
    /// Sent as `Authorization: Bearer …`; read from `token_file` or `token_env` when the
    /// settings load.
    pub token: Option<Secret>,
}

/// A long-lived child process per slot of the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// Processes (tasks at once) per worker process.
    pub processes: usize,
    /// Variables added to the worker's environment for the process; values may be secrets
    /// and never print.
    pub env: BTreeMap<String, Secret>,
    /// Working directory; the worker's when unset.
    pub cwd: Option<PathBuf>,
}

/// A table as written; checked into an [`AgentSpec`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    command: Option<Vec<String>>,
    processes: Option<usize>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    timeout: Option<toml::Value>,
    url: Option<String>,
    concurrency: Option<usize>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
}

/// Most requests one HTTP agent may have in flight per worker process.
pub const MAX_CONCURRENCY: usize = 4096;

/// Reads the `[agents]` table of a settings file; an error names the agent and the field.
pub fn parse(agents: toml::Table) -> Result<Vec<AgentSpec>, String> {
    agents
        .into_iter()
        .map(|(name, table)| {
            parse_one(&name, table).map_err(|why| format!("[agents.{name}]: {why}"))
        })
        .collect()
}

fn parse_one(name: &str, table: toml::Value) -> Result<AgentSpec, String> {
    if !crate::task::valid_agent_type(name) {
        return Err("an agent name is 1-64 letters, digits, `_` or `-`".into());
    }
    let written = Written::deserialize(table).map_err(|e| e.to_string())?;
    let timeout = written
        .timeout
        .map(|value| match value {
            toml::Value::String(text) => crate::duration::parse(&text).map_err(|e| e.to_string()),
            toml::Value::Integer(secs) if secs > 0 => Ok(Duration::from_secs(secs as u64)),
            toml::Value::Float(secs) if secs > 0.0 => {
                Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
            }
            other => Err(format!(
                "timeout: expected a duration such as \"30s\", got {}",
                other.type_str()
            )),
        })
        .transpose()?;
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err("timeout must be longer than zero".into());
    }
    if let Some(url) = written.url {
        if written.command.is_some()
            || written.processes.is_some()
            || written.cwd.is_some()
            || !written.env.is_empty()
        {
            return Err("an agent is a `command` (with `processes`, `env`, `cwd`) or a `url` (with `concurrency`, `token_file`, `token_env`), not both".into());
        }
        return Ok(AgentSpec {
            name: name.to_string(),
            kind: AgentKind::Http(http_spec(
                url,
                written.concurrency,
                written.token_file,
                written.token_env,
            )?),
            timeout,
        });
    }
    if written.concurrency.is_some() || written.token_file.is_some() || written.token_env.is_some()
    {
        return Err(
            "`concurrency`, `token_file` and `token_env` belong to an HTTP agent (`url`)".into(),
        );
    }
    let command = written
        .command
        .ok_or("`command` or `url` is required: the program and its arguments, e.g. [\"python3\", \"-m\", \"swarmd.agent\", \"mymodule:MyAgent\"], or the endpoint to POST tasks to")?;
    if command
        .first()
        .is_none_or(|program| program.trim().is_empty())
    {
        return Err("`command` must name a program".into());
    }
    let processes = written.processes.unwrap_or(1);
    if !(1..=MAX_PROCESSES).contains(&processes) {
        return Err(format!("`processes` must be 1 to {MAX_PROCESSES}"));
    }
    Ok(AgentSpec {
        name: name.to_string(),
        kind: AgentKind::Process(ProcessSpec {
            command,
            processes,
            env: written
                .env
                .into_iter()
                .map(|(key, value)| (key, Secret::new(value)))
                .collect(),
            cwd: written.cwd,
        }),
        timeout,
    })
}

fn http_spec(
    url: String,
    concurrency: Option<usize>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
) -> Result<HttpSpec, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("`url` {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`url` {url:?}: https is not supported yet; reach the agent over http on a \
                 private network or through a local TLS-terminating proxy"
            ));
        }
        _ => return Err(format!("`url` {url:?} must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`url` {url:?} names no host"));
    }
    let concurrency = concurrency.unwrap_or(64);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(format!("`concurrency` must be 1 to {MAX_CONCURRENCY}"));
    }
    let token = match (token_file, token_env) {
        (Some(_), Some(_)) => return Err("give `token_file` or `token_env`, not both".into()),
        (Some(path), None) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("`token_file` {}: {e}", path.display()))?;
            Some(text.trim().to_string())
        }
        (None, Some(variable)) => Some(
            std::env::var(&variable)
                .map_err(|_| format!("`token_env`: the variable {variable} is not set"))?,
        ),
        (None, None) => None,
    };
    if token.as_deref().is_some_and(str::is_empty) {
        return Err("the agent's token is empty".into());
    }
    Ok(HttpSpec {
        url,
        concurrency,
        token: token.map(Secret::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents(text: &str) -> Result<Vec<AgentSpec>, String> {
        let document: toml::Table = text.parse().unwrap();
        parse(document["agents"].as_table().unwrap().clone())
    }

    #[test]
    fn a_process_agent_is_read_with_its_defaults() {
        let read = agents(
            r#"
            [agents.email]
            command = ["python3", "-m", "swarmd.agent", "seed.agents:EmailAgent"]
            env = { SMTP_PASSWORD = "hunter2" }
            timeout = "90s"
            [agents.shout]
            command = ["./shout"]
            processes = 4
            cwd = "/srv/shout"
            "#,
        )
        .unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].name, "email");
        assert_eq!(read[0].timeout, Some(Duration::from_secs(90)));
        let AgentKind::Process(email) = &read[0].kind else {
            panic!("a process agent")
        };
        assert_eq!(email.processes, 1);
        assert_eq!(email.env["SMTP_PASSWORD"].expose(), "hunter2");
        assert!(
            !format!("{read:?}").contains("hunter2"),
            "secrets never print"
        );
        let AgentKind::Process(shout) = &read[1].kind else {
            panic!("a process agent")
        };
        assert_eq!(
            (shout.processes, shout.cwd.clone()),
            (4, Some("/srv/shout".into()))
        );
    }

    #[test]
    fn an_http_agent_reads_its_token_from_a_file_and_never_prints_it() {
        let file = std::env::temp_dir().join(format!("swarm-token-{}", std::process::id()));
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let read = agents(&format!(
            "[agents.shout]\nurl = \"http://127.0.0.1:9000/shout\"\ntoken_file = {:?}\ntimeout = 5",
            file.display().to_string()
        ))
        .unwrap();
        let _ = std::fs::remove_file(&file);
        let AgentKind::Http(http) = &read[0].kind else {
            panic!("an HTTP agent")
        };
        assert_eq!(
            http.token.as_ref().map(Secret::expose),
            Some("s3cret-token")
        );
        assert_eq!(
            (http.concurrency, read[0].timeout),
            (64, Some(Duration::from_secs(5)))
        );
        assert!(!format!("{read:?}").contains("s3cret"));
    }

    #[test]
    fn mistakes_name_the_agent_and_the_field() {
        for (text, words) in [
            (
                "[agents.x]\nprocesses = 2",
                "[agents.x]: `command` or `url` is required",
            ),
            ("[agents.x]\nurl = \"ftp://h/\"", "must start with http://"),
            (
                "[agents.x]\nurl = \"https://h/\"",
                "https is not supported yet",
            ),
            (
                "[agents.x]\nurl = \"http://h/\"\ncommand = [\"a\"]",
                "not both",
            ),
            (
                "[agents.x]\ncommand = [\"a\"]\nconcurrency = 2",
                "belong to an HTTP agent",
            ),
            (
                "[agents.x]\nurl = \"http://h/\"\ntoken_env = \"SWARM_NO_SUCH_VARIABLE\"",
                "is not set",
            ),
            (
                "[agents.x]\nurl = \"http://h/\"\nconcurrency = 0",
                "`concurrency` must be",
            ),
            ("[agents.x]\ncommand = []", "must name a program"),
            (
                "[agents.x]\ncommand = [\"a\"]\nprocesses = 0",
                "`processes` must be 1 to 256",
            ),
            (
                "[agents.x]\ncommand = [\"a\"]\ntimeout = \"soon\"",
                "is not a duration",
            ),
            (
                "[agents.x]\ncommand = [\"a\"]\ncomand = 1",
                "unknown field `comand`",
            ),
            ("[agents.\"a b\"]\ncommand = [\"a\"]", "an agent name is"),
        ] {
            let error = agents(text).unwrap_err();
            assert!(error.contains(words), "{text:?}: {error}");
        }
    }
}
