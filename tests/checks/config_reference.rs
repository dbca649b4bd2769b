//! `docs/configuration.md` carries the settings reference rendered from the table in
//! `src/config/table.rs`. `SWARM_BLESS=1 cargo test --test checks` rewrites it.

use std::path::Path;

use swarm_director::config::reference;

#[test]
fn the_configuration_page_is_rendered_from_the_settings_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let page = std::fs::read_to_string(&path).expect("docs/configuration.md");
    let fresh = reference::refreshed(&page).expect("the page has the generated markers");
    if std::env::var_os("SWARM_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write docs/configuration.md");
        return;
    }
    assert!(
        page == fresh,
        "docs/configuration.md is stale: run `SWARM_BLESS=1 cargo test --test checks` \
         and commit the page"
    );
}

/// Every `SWARM_*` / `OTEL_*` variable named in `src/` is in the settings table or in the
/// list of variables read outside it, so the reference misses none.
#[test]
fn every_variable_the_program_names_is_in_the_reference() {
    use swarm_director::config::table::{PROCESS_VARIABLES, SETTINGS};
    let mut named = Vec::new();
    for path in crate::rust_sources().1 {
        let source = std::fs::read_to_string(&path).expect("read source");
        for piece in source.split('"').skip(1).step_by(2) {
            let is_variable = piece.starts_with("SWARM_") || piece.starts_with("OTEL_");
            if is_variable && piece.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                named.push((piece.to_string(), path.display().to_string()));
            }
        }
    }
    let known = |name: &str| {
        SETTINGS.iter().any(|s| s.env == name) || PROCESS_VARIABLES.iter().any(|p| p.0 == name)
    };
    let unknown: Vec<_> = named
        .iter()
        .filter(|(name, _)| !name.ends_with('_') && name != "SWARM_TASKS" && !known(name))
        .collect();
    assert!(unknown.is_empty(), "not in the reference: {unknown:?}");
    assert!(named.len() > 20);
}
