//! The container image's Dockerfile.

use super::*;

#[test]
fn the_image_is_multi_stage_and_runs_as_a_user() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a builder and a runtime stage");
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(dockerfile.contains("ENTRYPOINT [\"swarmd\"]"));
}
