//! Registry clients that outlive one request: one [`RegistryClient`] per host, all
//! sending through one HTTP connection pool. A Lambda function keeps one set for the
//! life of its execution environment, so warm invocations reuse open connections and
//! the cached ECR authorization token instead of starting over per event.

use super::client::{http_client, RegistryClient};
use super::settings::RegistrySettings;
use super::DistributionRepository;
use crate::registry::{RegistryError, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One client per registry host under one set of settings, created on first use.
#[derive(Debug)]
pub struct RegistryClients {
    settings: RegistrySettings,
    http: reqwest::Client,
    by_host: Mutex<HashMap<String, Arc<RegistryClient>>>,
}

impl RegistryClients {
    /// No clients yet: they are made per host on first use, with `settings`, all sharing
    /// one HTTP connection pool made here.
    pub fn new(settings: RegistrySettings) -> Result<Self> {
        let http = http_client(settings.allow_insecure_http).map_err(|message| {
            RegistryError::Invalid {
                location: "registry clients".into(),
                message,
            }
        })?;
        Ok(Self {
            settings,
            http,
            by_host: Default::default(),
        })
    }

    /// The settings every client is built with.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// The client for `host` (as references name it), the same one on every call.
    pub fn client(&self, host: &str) -> Result<Arc<RegistryClient>> {
        let mut by_host = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = by_host.get(host) {
            return Ok(client.clone());
        }
        let client = Arc::new(RegistryClient::new_sharing(
            &self.settings,
            host,
            self.http.clone(),
        )?);
        by_host.insert(host.to_string(), client.clone());
        Ok(client)
    }

    /// Repository `name` on `host`, through that host's client.
    pub fn repository(&self, host: &str, name: &str) -> Result<DistributionRepository> {
        DistributionRepository::new(self.client(host)?, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_per_host() {
        let clients = RegistryClients::new(RegistrySettings::default()).unwrap();
        let a = clients.client("127.0.0.1:5000").unwrap();
        let b = clients.repository("127.0.0.1:5000", "app").unwrap();
        assert!(Arc::ptr_eq(&a, b.client()));
        let other = clients.client("127.0.0.1:5001").unwrap();
        assert!(!Arc::ptr_eq(&a, &other));
        assert!(clients.repository("127.0.0.1:5000", "Bad/Name").is_err());
    }
}
