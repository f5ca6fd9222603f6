//! The registry's further replicas (`--registry-replicas R`, etcd backend only): replica `r` >= 2 runs in
//! its own namespace `NAME-regR` (`NAME-uregR` 192.0.2.(4+r)/24, port 7443) with the same `registry.toml`
//! as replica 1 (the same etcd endpoints and key prefix), and logs to `registry/replicaR.log`. Every daemon's
//! `[registry] urls` lists every replica.
//!
//! Starting, stopping and calling any replica by index is in [`crate::registry`] ([`Lab::start_replica`],
//! [`Lab::kill_replica`], [`Lab::replica_call`]); this module owns the options' check, building a replica's
//! namespace, and the replicas' part of the lab's document.

use crate::doc::ReplicaDoc;
use crate::error::{LabError, Result};
use crate::lab::{Lab, UpOptions};
use crate::layout::{self, Layout};
use crate::process::ProcId;
use crate::registry::RegistryBackend;
use crate::state::RegistryState;

/// Checks `--registry-replicas` against the other options.
pub(crate) fn validate(opts: &UpOptions) -> Result<()> {
    let r = opts.registry_replicas;
    if !(1..=layout::MAX_REGISTRY_REPLICAS).contains(&r) {
        return Err(LabError::InvalidOption(format!(
            "--registry-replicas {r}: a lab has 1 to {} registry replicas",
            layout::MAX_REGISTRY_REPLICAS
        )));
    }
    if !opts.registry && (r > 1 || opts.registry_backend != RegistryBackend::Sqlite) {
        return Err(LabError::InvalidOption(
            "--registry-replicas and --registry-backend need the registry: drop --no-registry".into(),
        ));
    }
    if r > 1 && opts.registry_backend != RegistryBackend::Etcd {
        return Err(LabError::InvalidOption(format!(
            "--registry-replicas {r}: several replicas share one store, which needs --registry-backend etcd"
        )));
    }
    Ok(())
}

impl Lab {
    /// Builds replica `r` (>= 2): its namespace and underlay link, then starts it and waits until it
    /// answers.
    pub(crate) fn build_replica(&mut self, r: usize) -> Result<()> {
        let l = self.layout.clone();
        self.add_service_netns(
            &l.replica_netns(r),
            &l.replica_if(r),
            &l.replica_hub_port(r),
            Layout::replica_addr(r),
        )?;
        self.start_replica(r).map(drop)
    }

    /// How many registry replicas the lab has (an error without a registry).
    pub fn replica_count(&self) -> Result<usize> {
        Ok(self.registry()?.replica_count())
    }

    /// PID of registry replica `r`; `None` when it does not run.
    pub fn replica_pid(&self, r: usize) -> Result<Option<u32>> {
        Ok(self
            .registry()?
            .replica_process(r)
            .filter(ProcId::is_alive)
            .map(|p| p.pid))
    }

    /// Every replica's URL, in replica order (what the daemons' `[registry] urls` list).
    pub fn replica_urls(&self) -> Result<Vec<String>> {
        Ok((1..=self.replica_count()?).map(Layout::replica_url).collect())
    }

    /// The replicas of `reg` for the lab's document.
    pub(crate) fn replica_docs(&self, reg: &RegistryState) -> Vec<ReplicaDoc> {
        (1..=reg.replica_count())
            .map(|r| ReplicaDoc {
                netns: self.layout.replica_netns(r),
                url: Layout::replica_url(r),
                pid: reg.replica_process(r).filter(ProcId::is_alive).map(|p| p.pid),
            })
            .collect()
    }
}
