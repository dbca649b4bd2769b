//! The settings reference in Markdown, rendered from the table for `docs/configuration.md`
//! (between its `generated` markers; a test fails when the checked-in page is stale).

use std::fmt::Write;

use super::table::{PROCESS_VARIABLES, SETTINGS};

/// Headings of the file's sections, in the table's order.
const SECTIONS: [(&str, &str); 6] = [
    ("nats", "NATS"),
    ("database", "PostgreSQL"),
    ("redis", "Redis"),
    ("worker", "Workers"),
    ("api", "HTTP API"),
    ("scale", "Scale signals"),
];

/// Marks the start of the generated part of `docs/configuration.md`.
pub const BEGIN_MARKER: &str = "<!-- generated from src/config/table.rs: do not edit by hand -->";
/// Marks its end.
pub const END_MARKER: &str = "<!-- end of generated reference -->";

/// The reference: one table per section, then the variables read outside the settings.
pub fn markdown() -> String {
    let mut out = String::new();
    for (section, heading) in SECTIONS {
        let _ = writeln!(out, "### {heading} (`[{section}]`)\n");
        out.push_str("| variable | file key | default | kind | meaning |\n|---|---|---|---|---|\n");
        for setting in SETTINGS
            .iter()
            .filter(|s| s.key.split('.').next() == Some(section))
        {
            let default = match (setting.default_shown, setting.default) {
                (Some(shown), _) => shown.to_string(),
                (None, Some(value)) => format!("`{value}`"),
                (None, None) => "–".to_string(),
            };
            let field = setting.key.split_once('.').map_or(setting.key, |(_, f)| f);
            let _ = writeln!(
                out,
                "| `{}` | `{field}` | {default} | {} | {} |",
                setting.env,
                setting.kind.name(),
                one_line(setting.doc)
            );
        }
        out.push('\n');
    }
    out.push_str(
        "### Read outside the settings file\n\n| variable | default | meaning |\n|---|---|---|\n",
    );
    for (name, default, doc) in PROCESS_VARIABLES {
        let _ = writeln!(out, "| `{name}` | {default} | {doc} |");
    }
    out
}

/// Table cells are one line: the doc strings' continuation spaces collapse.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `page` with the part between the markers replaced by the current reference.
///
/// Fails when the markers are missing.
pub fn refreshed(page: &str) -> Result<String, &'static str> {
    let start = page
        .find(BEGIN_MARKER)
        .ok_or("the begin marker is missing")?
        + BEGIN_MARKER.len();
    let end = page.find(END_MARKER).ok_or("the end marker is missing")?;
    if end < start {
        return Err("the markers are in the wrong order");
    }
    Ok(format!(
        "{}\n\n{}\n{}",
        &page[..start],
        markdown().trim_end(),
        &page[end..]
    ))
}
