//! The README's walkthrough shows exactly the commands of `docs/walkthrough.sh`, which the netns test
//! `walkthrough` runs: a block edited in one place and not the other fails here. Needs no root.

use sdwan_lab::walkthrough::{differences, readme_steps, repo_root, script_steps};

#[test]
fn readme_walkthrough_is_the_script() {
    let root = repo_root();
    let read =
        |name: &str| std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
    let script = script_steps(&read("docs/walkthrough.sh")).unwrap_or_else(|e| panic!("docs/walkthrough.sh: {e}"));
    let readme = readme_steps(&read("README.md")).unwrap_or_else(|e| panic!("README.md: {e}"));
    assert!(
        script.len() >= 5,
        "docs/walkthrough.sh has {} marked steps; the walkthrough has more",
        script.len()
    );
    let diff = differences(&readme, &script);
    assert!(
        diff.is_empty(),
        "README.md's walkthrough and docs/walkthrough.sh differ (edit both):\n  {}",
        diff.join("\n  ")
    );
}
