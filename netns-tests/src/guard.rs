//! [`LabGuard`]: removes a lab when it goes out of scope, so a failing or panicking test leaks no namespace,
//! interface or process.

use std::ops::{Deref, DerefMut};

use crate::down::DownReport;
use crate::error::Result;
use crate::lab::{Lab, UpOptions, KEEP_ENV};

/// Owns a lab (or just its name) and takes it down on drop. On a panic it first prints the tail of every
/// peer's log to stderr, which is what a failing test needs. `SDWAN_LAB_KEEP=1` keeps the lab for debugging.
#[derive(Debug)]
pub struct LabGuard {
    /// The lab's name: `down` works by name, even when no [`Lab`] could be built or loaded.
    name: String,
    /// The lab, when this guard has one.
    lab: Option<Lab>,
}

impl LabGuard {
    /// Builds a lab (see [`Lab::up`]) and guards it.
    pub fn up(opts: UpOptions) -> Result<LabGuard> {
        Lab::up(opts).map(LabGuard::new)
    }

    /// Guards an existing lab.
    pub fn new(lab: Lab) -> LabGuard {
        LabGuard {
            name: lab.name().to_owned(),
            lab: Some(lab),
        }
    }

    /// Guards whatever a lab called `name` will consist of, e.g. before running `sdwan-lab up` in a
    /// subprocess. [`LabGuard::lab`] loads it later.
    pub fn for_name(name: &str) -> LabGuard {
        LabGuard {
            name: name.to_owned(),
            lab: None,
        }
    }

    /// The guarded lab, loaded from its state file if the guard was made by name.
    pub fn lab(&mut self) -> Result<&mut Lab> {
        if self.lab.is_none() {
            self.lab = Some(Lab::load(&self.name)?);
        }
        Ok(self.lab.as_mut().expect("just loaded"))
    }

    /// Takes the lab down now and reports what was removed.
    pub fn down(mut self) -> Result<DownReport> {
        self.take_down()
    }

    fn take_down(&mut self) -> Result<DownReport> {
        match self.lab.take() {
            Some(lab) => lab.teardown(),
            None => Lab::down(&self.name),
        }
    }
}

impl Deref for LabGuard {
    type Target = Lab;
    /// # Panics
    /// When the guard was made with [`LabGuard::for_name`] and [`LabGuard::lab`] was not called.
    fn deref(&self) -> &Lab {
        self.lab.as_ref().expect("LabGuard::for_name: call lab() first")
    }
}

impl DerefMut for LabGuard {
    fn deref_mut(&mut self) -> &mut Lab {
        self.lab.as_mut().expect("LabGuard::for_name: call lab() first")
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(lab) = &self.lab {
                eprintln!("\n=== lab {:?} at failure ===", lab.name());
                for i in 1..=lab.peer_count() {
                    eprintln!("{}", lab.log_tail(i, 40));
                }
            }
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "{KEEP_ENV} is set: lab {:?} left in place; remove it with `sdwan-lab down --name {}`",
                self.name, self.name
            );
            return;
        }
        match self.take_down() {
            Ok(report) => {
                for w in report.warnings {
                    eprintln!("lab {:?} down: {w}", self.name);
                }
            }
            Err(e) => eprintln!("lab {:?} down failed: {e}", self.name),
        }
    }
}
