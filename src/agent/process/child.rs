//! One running agent process: started with the declared command, its stdout read line by
//! line with a length cap, its stderr sent to the worker's log under the task it is running
//! (the last lines kept for the error when it dies), killed when dropped.

use std::{
    collections::VecDeque,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, ChildStdout},
};
use uuid::Uuid;

use super::protocol::{self, AgentMessage};
use crate::config::ProcessSpec;

/// How long a process may take to say `ready` (an interpreter importing its libraries).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Stderr lines kept for the error of a process that died.
const STDERR_TAIL: usize = 10;
/// Longest stderr line logged.
const STDERR_LINE: usize = 8 * 1024;

/// A line read from the process, or why there is none.
#[derive(Debug, PartialEq)]
pub enum Line {
    Text(Vec<u8>),
    /// Longer than the cap: the process is not trusted any further.
    TooLong,
    /// The process closed its stdout (it exited).
    Closed,
}

/// A process started and ready for tasks.
pub struct AgentProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    max_line: usize,
    /// The task it runs or last ran, for its stderr lines (which travel on a pipe of their
    /// own: a line written just before the answer may be read after it).
    pub current: Arc<Mutex<Option<Uuid>>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl AgentProcess {
    /// Starts `spec` for agent `name` and waits for its `ready`.
    ///
    /// Fails with a reason (what could not be started, the exit status and last stderr
    /// lines of a process that quit, a `ready` that never came).
    pub async fn start(name: &str, spec: &ProcessSpec, max_line: usize) -> Result<Self, String> {
        let mut command = tokio::process::Command::new(&spec.command[0]);
        command
            .args(&spec.command[1..])
            .env("SWARMD_AGENT_TYPE", name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in &spec.env {
            command.env(key, value.expose());
        }
        if let Some(dir) = &spec.cwd {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", spec.command[0]))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the process has no pipes".into());
        };
        let current = Arc::new(Mutex::new(None));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(log_stderr(
            name.to_string(),
            stderr,
            current.clone(),
            stderr_tail.clone(),
        ));
        let mut process = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            max_line,
            current,
            stderr_tail,
        };
        match tokio::time::timeout(START_TIMEOUT, process.read_line()).await {
            Err(_) => Err(format!(
                "no `ready` line within {} s{}",
                START_TIMEOUT.as_secs(),
                process.stderr_said()
            )),
            Ok(Ok(Line::Text(line))) => match protocol::parse(&line) {
                Ok(AgentMessage::Ready { protocol }) if protocol == protocol::VERSION => {
                    Ok(process)
                }
                Ok(AgentMessage::Ready { protocol }) => Err(format!(
                    "it speaks protocol {protocol}; this worker speaks {}",
                    protocol::VERSION
                )),
                Ok(other) => Err(format!("its first line is not `ready`: {other:?}")),
                Err(why) => Err(format!("its first line is {why}")),
            },
            Ok(Ok(Line::TooLong)) => Err("its first line is too long".into()),
            Ok(Ok(Line::Closed) | Err(_)) => Err(process.exit_report().await),
        }
    }

    /// Whether the process has exited (while idle: killed from outside, or it quit).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Writes one message line.
    pub async fn send(&mut self, message: &impl serde::Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await
    }

    /// The next line of stdout, at most `max_line` bytes.
    pub async fn read_line(&mut self) -> std::io::Result<Line> {
        let mut line = Vec::new();
        loop {
            let available = self.stdout.fill_buf().await?;
            if available.is_empty() {
                return Ok(Line::Closed);
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    line.extend_from_slice(&available[..end]);
                    self.stdout.consume(end + 1);
                    if line.len() > self.max_line {
                        return Ok(Line::TooLong);
                    }
                    return Ok(Line::Text(line));
                }
                None => {
                    let taken = available.len();
                    line.extend_from_slice(available);
                    self.stdout.consume(taken);
                    if line.len() > self.max_line {
                        return Ok(Line::TooLong);
                    }
                }
            }
        }
    }

    /// How the process ended (waiting a moment for it), with its last stderr lines.
    pub async fn exit_report(&mut self) -> String {
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => format!("exited ({status})"),
            Ok(Err(error)) => format!("cannot be waited for ({error})"),
            Err(_) => "closed its stdout".to_string(),
        };
        // Its last stderr lines may still be on their way to the log reader.
        tokio::time::sleep(Duration::from_millis(20)).await;
        format!("{status}{}", self.stderr_said())
    }

    fn stderr_said(&self) -> String {
        let tail = self.stderr_tail.lock().expect("stderr tail lock");
        if tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
            format!("; last stderr: {}", lines.join(" | "))
        }
    }
}

/// Logs each stderr line of agent `name` under the task it runs, keeping the last ones.
/// A line is cut at [`STDERR_LINE`] bytes (the rest of it is dropped), so a process that
/// floods stderr costs the worker no memory.
async fn log_stderr(
    name: String,
    stderr: tokio::process::ChildStderr,
    current: Arc<Mutex<Option<Uuid>>>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        let Ok(available) = reader.fill_buf().await else {
            return;
        };
        if available.is_empty() {
            return;
        }
        let (chunk, ends_line) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        let room = STDERR_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len() + usize::from(ends_line);
        reader.consume(used);
        if ends_line {
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            let task = *current.lock().expect("current task lock");
            match task {
                Some(task) => tracing::info!(agent = %name, %task, "agent stderr: {text}"),
                None => tracing::info!(agent = %name, "agent stderr: {text}"),
            }
            let mut tail = tail.lock().expect("stderr tail lock");
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(text.chars().take(500).collect());
        }
    }
}
