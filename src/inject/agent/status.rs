//! What the agent reports: each job's status (`arca agent status`, the sidecar's `/health`)
//! and the counters behind `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::auth::AutoAuth;

/// Seconds since the Unix epoch.
#[must_use]
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One job's status. Holds names and paths, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The job's name.
    pub name: String,
    /// `file` or `sidecar`.
    pub method: &'static str,
    /// The destination file, or the sidecar's address.
    pub target: String,
    /// How many mappings it delivers.
    pub secrets: usize,
    /// When the job was created (the agent started).
    pub created: u64,
    /// When it last refreshed successfully.
    pub last_refresh: Option<u64>,
    /// Successful refreshes.
    pub refresh_count: u64,
    /// Refreshes that changed what is delivered (file rewrites, new sidecar values).
    pub delivery_count: u64,
    /// Failed refreshes.
    pub error_count: u64,
    /// Why the last refresh failed; `None` once one succeeds. While set, the last good
    /// delivery stays in place.
    pub last_error: Option<String>,
    /// The outcome of the last command run after a change.
    pub last_command: Option<String>,
    /// Whether the job was revoked.
    pub revoked: bool,
}

impl JobStatus {
    /// A new job's status.
    #[must_use]
    pub fn new(name: &str, method: &'static str, target: String, secrets: usize) -> Self {
        Self {
            name: name.to_owned(),
            method,
            target,
            secrets,
            created: now(),
            last_refresh: None,
            refresh_count: 0,
            delivery_count: 0,
            error_count: 0,
            last_error: None,
            last_command: None,
            revoked: false,
        }
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "method": self.method,
            "target": self.target,
            "secrets": self.secrets,
            "created": self.created,
            "last_refresh": self.last_refresh,
            "refresh_count": self.refresh_count,
            "delivery_count": self.delivery_count,
            "error_count": self.error_count,
            "last_error": self.last_error,
            "last_command": self.last_command,
            "revoked": self.revoked,
            "healthy": !self.revoked && self.last_error.is_none() && self.last_refresh.is_some(),
        })
    }
}

/// Everything the agent's tasks and listeners share for reporting.
#[derive(Debug)]
pub struct Board {
    jobs: Mutex<Vec<JobStatus>>,
    auth: AutoAuth,
    started: u64,
    events: AtomicU64,
    sidecar_requests: Mutex<BTreeMap<u16, u64>>,
}

impl Board {
    /// A board for these jobs.
    #[must_use]
    pub fn new(jobs: Vec<JobStatus>, auth: AutoAuth) -> Self {
        Self {
            jobs: Mutex::new(jobs),
            auth,
            started: now(),
            events: AtomicU64::new(0),
            sidecar_requests: Mutex::new(BTreeMap::new()),
        }
    }

    /// Changes job `name`'s status.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut JobStatus)) {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(job) = jobs.iter_mut().find(|j| j.name == name) {
            change(job);
        }
    }

    /// A copy of every job's status.
    #[must_use]
    pub fn jobs(&self) -> Vec<JobStatus> {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts change-feed events received.
    pub fn count_events(&self, n: usize) {
        self.events.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a sidecar answer.
    pub fn count_request(&self, status: u16) {
        *self
            .sidecar_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(status)
            .or_default() += 1;
    }

    /// The status as JSON: `/health` and `arca agent status`.
    #[must_use]
    pub fn json(&self) -> Value {
        let auth = self.auth.status();
        let jobs = self.jobs();
        let healthy = auth.authenticated
            && jobs
                .iter()
                .all(|j| j.revoked || (j.last_error.is_none() && j.last_refresh.is_some()));
        json!({
            "status": if healthy { "ok" } else { "degraded" },
            "started": self.started,
            "auth": {
                "authenticated": auth.authenticated,
                "logins": auth.logins,
                "renewals": auth.renewals,
                "last_error": auth.last_error,
            },
            "jobs": jobs.iter().map(JobStatus::json).collect::<Vec<_>>(),
        })
    }

    /// The metrics in Prometheus's text exposition format (version 0.0.4).
    #[must_use]
    pub fn metrics(&self) -> String {
        let auth = self.auth.status();
        let jobs = self.jobs();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in samples {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        let plain = |v: u64| vec![(String::new(), v.to_string())];
        family(
            "arca_agent_up",
            "gauge",
            "Whether the agent is running.",
            plain(1),
        );
        family(
            "arca_agent_start_time_seconds",
            "gauge",
            "When the agent started, in seconds since the Unix epoch.",
            plain(self.started),
        );
        family(
            "arca_agent_authenticated",
            "gauge",
            "Whether the agent holds a token that worked at the last check.",
            plain(u64::from(auth.authenticated)),
        );
        family(
            "arca_agent_logins_total",
            "counter",
            "Successful logins (token file reads or AppRole logins).",
            plain(auth.logins),
        );
        family(
            "arca_agent_token_renewals_total",
            "counter",
            "Successful token renewals.",
            plain(auth.renewals),
        );
        family(
            "arca_agent_change_events_total",
            "counter",
            "Events received from the server's change feed.",
            plain(self.events.load(Ordering::Relaxed)),
        );
        let per_job = |value: &dyn Fn(&JobStatus) -> u64| -> Vec<(String, String)> {
            jobs.iter()
                .map(|j| {
                    (
                        format!(
                            "{{job=\"{}\",method=\"{}\"}}",
                            escape_label(&j.name),
                            j.method
                        ),
                        value(j).to_string(),
                    )
                })
                .collect()
        };
        family(
            "arca_agent_job_secrets",
            "gauge",
            "Mappings a job delivers.",
            per_job(&|j| j.secrets as u64),
        );
        family(
            "arca_agent_job_refreshes_total",
            "counter",
            "Successful refreshes of a job.",
            per_job(&|j| j.refresh_count),
        );
        family(
            "arca_agent_job_deliveries_total",
            "counter",
            "Refreshes that changed what a job delivers.",
            per_job(&|j| j.delivery_count),
        );
        family(
            "arca_agent_job_errors_total",
            "counter",
            "Failed refreshes of a job.",
            per_job(&|j| j.error_count),
        );
        family(
            "arca_agent_job_last_refresh_timestamp_seconds",
            "gauge",
            "When a job last refreshed successfully (0: never).",
            per_job(&|j| j.last_refresh.unwrap_or(0)),
        );
        family(
            "arca_agent_job_healthy",
            "gauge",
            "Whether a job's last refresh succeeded.",
            per_job(&|j| u64::from(j.last_error.is_none() && j.last_refresh.is_some())),
        );
        family(
            "arca_agent_job_revoked",
            "gauge",
            "Whether a job was revoked.",
            per_job(&|j| u64::from(j.revoked)),
        );
        let requests: Vec<(String, String)> = self
            .sidecar_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(code, n)| (format!("{{code=\"{code}\"}}"), n.to_string()))
            .collect();
        family(
            "arca_agent_sidecar_requests_total",
            "counter",
            "Requests to the sidecar's /secrets/, by status code.",
            requests,
        );
        out
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
