//! The ReferenceGrants in `diff` (with `--reference-grants`): what `run` would create, update
//! and delete beside the Upstreams, planned by the loop's own grant planner.
//!
//! In the JSON document, `grants` (null when grants are off or not served) holds `create` and
//! `update` (`{namespace, name, service, grant}`, the grant as run would write it; a grant whose
//! Upstream is still to be created shows without the ownerReference run adds once it exists),
//! `delete` (`{namespace, name, service, reason}`) and `unchanged` (a count). Grant writes count
//! in `diff`'s exit code like Upstream writes; `summary` counts only Upstreams.

use std::fmt::Write as _;

use serde::Serialize;

use crate::crd::ReferenceGrant;
use crate::model::ServiceKey;
use crate::plan::GrantAction;

#[derive(Debug, Default, Serialize)]
pub struct GrantReport {
    pub create: Vec<GrantWrite>,
    pub update: Vec<GrantWrite>,
    pub delete: Vec<GrantDelete>,
    pub unchanged: usize,
}

#[derive(Debug, Serialize)]
pub struct GrantWrite {
    pub namespace: String,
    pub name: String,
    pub service: String,
    pub grant: ReferenceGrant,
}

#[derive(Debug, Serialize)]
pub struct GrantDelete {
    pub namespace: String,
    pub name: String,
    pub service: Option<String>,
    pub reason: String,
}

impl GrantReport {
    /// Records one planned grant write of `service` (`None`: a grant no Service maps to).
    pub fn record(&mut self, service: Option<&ServiceKey>, action: &GrantAction) {
        let service_name = service.map(ToString::to_string);
        let write = |grant: &ReferenceGrant| GrantWrite {
            namespace: grant.metadata.namespace.clone().unwrap_or_default(),
            name: grant.metadata.name.clone().unwrap_or_default(),
            service: service_name.clone().unwrap_or_default(),
            grant: grant.clone(),
        };
        match action {
            GrantAction::Create(grant) => self.create.push(write(grant)),
            GrantAction::Update { desired, .. } => self.update.push(write(desired)),
            GrantAction::Delete {
                namespace, name, ..
            } => self.delete.push(GrantDelete {
                namespace: namespace.clone(),
                name: name.clone(),
                reason: match &service_name {
                    Some(_) => "its Upstream is no longer the Service's".to_string(),
                    None => "owned, and no Service in scope maps to its name".to_string(),
                },
                service: service_name,
            }),
        }
    }

    pub fn changes(&self) -> usize {
        self.create.len() + self.update.len() + self.delete.len()
    }

    pub fn sort(&mut self) {
        let key = |namespace: &str, name: &str| (namespace.to_string(), name.to_string());
        self.create.sort_by_key(|c| key(&c.namespace, &c.name));
        self.update.sort_by_key(|u| key(&u.namespace, &u.name));
        self.delete.sort_by_key(|d| key(&d.namespace, &d.name));
    }

    /// The grants' part of the text report.
    pub fn write_text(&self, out: &mut String) {
        let from = |grant: &ReferenceGrant| {
            let entries: Vec<String> = grant
                .spec
                .from
                .iter()
                .map(|from| format!("{} from {}", from.kind, from.namespace))
                .collect();
            entries.join(", ")
        };
        for (title, sign, writes) in [
            ("ReferenceGrants to create", '+', &self.create),
            ("ReferenceGrants to update", '~', &self.update),
        ] {
            if writes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title} ({}):", writes.len());
            for write in writes {
                let _ = writeln!(
                    out,
                    "  {sign} {}/{} (Service {}): {}",
                    write.namespace,
                    write.name,
                    write.service,
                    from(&write.grant)
                );
            }
        }
        if !self.delete.is_empty() {
            let _ = writeln!(out, "\nReferenceGrants to delete ({}):", self.delete.len());
            for delete in &self.delete {
                let _ = writeln!(
                    out,
                    "  - {}/{}: {}",
                    delete.namespace, delete.name, delete.reason
                );
            }
        }
    }
}
