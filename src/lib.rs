//! heroku-lb: a load balancer, built on Cloudflare's Pingora, for the apps of
//! a Heroku pipeline.
//!
//! Heroku users run several identical apps on cheap dynos instead of one
//! expensive scaled app; heroku-lb finds those apps, round-robins requests over
//! the ones that are up, and deploys itself to Heroku as a container app.
//!
//! # Layout
//! In the order a discovery round and then a request travel:
//! - [`config`]: `Settings` from `pingora.yaml` and the environment, plus Pingora's `ServerConf`.
//! - [`backend`]: what one backend is (URL identity, Host, SNI, resolved address) and how it
//!   rides inside Pingora's `Backend`.
//! - [`discovery`]: the `ServiceDiscovery` Pingora's `LoadBalancer` runs: app sources
//!   (static list, demo) and background name resolution.
//! - [`proxy`]: the `ProxyHttp` implementation: selection, retries, hop headers, errors.
//! - [`demo`]: the embedded demo backends.
//!
//! `main.rs` only wires these into a Pingora `Server`.

pub mod backend;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod proxy;
