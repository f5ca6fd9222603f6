//! The README's walkthrough as data: the steps of `docs/walkthrough.sh` (the lines between `# >>> STEP` and
//! `# <<< STEP`) and the README's fenced blocks marked `<!-- walkthrough: STEP -->`. The README check
//! (`tests/readme_walkthrough.rs`) compares the two; the netns test `walkthrough` runs the script's steps.
//! Pure text handling: nothing here runs a command.

use std::path::{Path, PathBuf};

/// The repository's root (this crate lives in `netns-tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_owned)
}

/// One step: its name and its lines, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The step's name (`ca`, `registry`, …).
    pub name: String,
    /// Its lines, without line ends.
    pub lines: Vec<String>,
}

impl Step {
    /// The step as one shell text.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// The steps of the script `text`, in order: the lines between `# >>> NAME` and `# <<< NAME`. An unclosed,
/// nested or mismatched marker is an error naming its line.
pub fn script_steps(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut open: Option<(usize, Step)> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(name) = line.strip_prefix("# >>> ") {
            if let Some((at, step)) = &open {
                return Err(format!(
                    "line {}: step {name:?} opens inside {:?} (line {at})",
                    n + 1,
                    step.name
                ));
            }
            open = Some((
                n + 1,
                Step {
                    name: name.to_owned(),
                    lines: Vec::new(),
                },
            ));
        } else if let Some(name) = line.strip_prefix("# <<< ") {
            match open.take() {
                Some((_, step)) if step.name == name => steps.push(step),
                Some((at, step)) => {
                    return Err(format!(
                        "line {}: closes {name:?} but {:?} is open (line {at})",
                        n + 1,
                        step.name
                    ))
                }
                None => return Err(format!("line {}: closes {name:?}, which is not open", n + 1)),
            }
        } else if let Some((_, step)) = open.as_mut() {
            step.lines.push(line.to_owned());
        }
    }
    match open {
        Some((at, step)) => Err(format!("line {at}: step {:?} is never closed", step.name)),
        None => Ok(steps),
    }
}

/// The README's marked blocks, in order: for each line `<!-- walkthrough: NAME -->`, the fenced block that
/// follows it, with the fence's indentation removed from every line. A marker without a block right after
/// it, or a block line less indented than its fence, is an error naming its line.
pub fn readme_steps(text: &str) -> Result<Vec<Step>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i]
            .trim()
            .strip_prefix("<!-- walkthrough: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            i += 1;
            continue;
        };
        let marker = i + 1;
        let fence = lines
            .get(i + 1)
            .filter(|l| l.trim_start().starts_with("```"))
            .ok_or_else(|| format!("line {marker}: the marker of {name:?} is not followed by a fenced block"))?;
        let indent = fence.len() - fence.trim_start().len();
        let close = format!("{}```", &fence[..indent]);
        let mut step = Step {
            name: name.to_owned(),
            lines: Vec::new(),
        };
        i += 2;
        loop {
            let line = lines
                .get(i)
                .ok_or_else(|| format!("line {marker}: the block of {name:?} is never closed"))?;
            if line.trim_end() == close {
                break;
            }
            if line.trim().is_empty() {
                step.lines.push(String::new());
            } else if line[..indent.min(line.len())].trim().is_empty() && line.len() > indent {
                step.lines.push(line[indent..].to_owned());
            } else {
                return Err(format!("line {}: less indented than the fence of {name:?}", i + 1));
            }
            i += 1;
        }
        steps.push(step);
        i += 1;
    }
    Ok(steps)
}

/// Where the README's blocks and the script's steps differ (names, order, lines); empty when they agree.
pub fn differences(readme: &[Step], script: &[Step]) -> Vec<String> {
    let names = |s: &[Step]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if names(readme) != names(script) {
        return vec![format!(
            "the README's marked blocks are {:?}, the script's steps {:?}",
            names(readme),
            names(script)
        )];
    }
    let mut out = Vec::new();
    for (r, s) in readme.iter().zip(script) {
        let len = r.lines.len().max(s.lines.len());
        if let Some(n) = (0..len).find(|&n| r.lines.get(n) != s.lines.get(n)) {
            out.push(format!(
                "step {:?}, line {} of the block: README {:?}, script {:?}",
                r.name,
                n + 1,
                r.lines.get(n).map_or("(none)", String::as_str),
                s.lines.get(n).map_or("(none)", String::as_str)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str =
        "set -e\ncase $1 in\na)\n# >>> a\necho 1\n\necho 2\n# <<< a\n;;\nb)\n# >>> b\nls\n# <<< b\n;;\nesac\n";
    const README: &str = "1. **A**\n\n   <!-- walkthrough: a -->\n   ```sh\n   echo 1\n\n   echo 2\n   ```\n\n<!-- walkthrough: b -->\n```sh\nls\n```\n";

    #[test]
    fn steps_are_read_from_both() {
        let script = script_steps(SCRIPT).unwrap();
        let readme = readme_steps(README).unwrap();
        assert_eq!(script, readme);
        assert_eq!(script[0].text(), "echo 1\n\necho 2\n");
        assert!(differences(&readme, &script).is_empty());
    }

    #[test]
    fn a_changed_line_or_step_is_a_difference() {
        let script = script_steps(SCRIPT).unwrap();
        let readme = readme_steps(&README.replace("   echo 2", "   echo 3")).unwrap();
        let d = differences(&readme, &script);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("step \"a\", line 3") && d[0].contains("echo 3"), "{d:?}");
        let readme = readme_steps(&README.replace("walkthrough: b", "walkthrough: c")).unwrap();
        assert!(differences(&readme, &script)[0].contains("[\"a\", \"c\"]"));
        let readme = readme_steps(&README.replace("ls\n```", "ls\nrm x\n```")).unwrap();
        assert!(differences(&readme, &script)[0].contains("line 2"));
    }

    #[test]
    fn broken_markers_are_errors() {
        assert!(script_steps("# >>> a\n# >>> b\n").unwrap_err().contains("inside"));
        assert!(script_steps("# >>> a\n# <<< b\n").unwrap_err().contains("closes \"b\""));
        assert!(script_steps("# >>> a\n").unwrap_err().contains("never closed"));
        assert!(readme_steps("<!-- walkthrough: a -->\ntext\n")
            .unwrap_err()
            .contains("not followed"));
        assert!(readme_steps("  <!-- walkthrough: a -->\n  ```sh\nx\n  ```\n")
            .unwrap_err()
            .contains("less indented"));
    }
}
