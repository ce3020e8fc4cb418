//! heroku-lb: a load balancer, built on Cloudflare's Pingora, for the apps of
//! a Heroku pipeline.
//!
//! Heroku users run several identical apps on cheap dynos instead of one
//! expensive scaled app; heroku-lb finds those apps, round-robins requests over
//! the ones that are up, and deploys itself to Heroku as a container app.
//!
//! # Layout
//! Top-down: each module uses only the ones listed after it (no import
//! circle), and the list reads in the order a request meets them.
//! - [`cli`]: `--version` and `--help`, before Pingora parses its own flags.
//! - [`proxy`]: the `ProxyHttp` implementation: `/_lb/` routing, selection, retries, what
//!   passive ejection hears, hop headers (and whose `X-Forwarded-*` to trust), the app's own
//!   URLs in redirects and cookies, errors, request lines and per-request metrics.
//! - [`status`]: the `/_lb/status` snapshot (JSON and HTML) and `/_lb/metrics`.
//! - [`webhooks`]: Heroku app webhooks received at `/_lb/hooks/heroku`: verified, then a
//!   "look at this app now" for discovery.
//! - [`store`]: several balancer dynos sharing one view through Heroku Key-Value Store: one
//!   lease holder polls and checks, ejections and webhooks are shared; optional.
//! - [`shutdown`]: the log of what a graceful shutdown did to requests in flight.
//! - [`demo`]: the embedded demo backends (a static source over local servers).
//! - [`discovery`]: the `ServiceDiscovery` Pingora's `LoadBalancer` runs: app sources
//!   (static list, Heroku pipeline) and background name resolution.
//! - [`health`]: `AppHealthCheck`, TCP then HTTP with each app's Host and SNI, run by
//!   Pingora's `HealthCheckService` on its own schedule.
//! - [`ejection`]: passive ejection on failures seen on live traffic, capped by
//!   `max_ejection_percent`.
//! - [`selection`]: the balancing policy (round robin, least connections, peak-EWMA), panic
//!   routing, per-app caps with the admission queue, and in-flight counts; [`sticky`]: the
//!   sticky-session cookie.
//! - [`backend`]: what one backend is at run time (`AppTarget`: address, health, counters)
//!   and how it rides inside Pingora's `Backend`.
//! - [`events`]: the last few health, ejection, panic and discovery events, for status.
//! - [`metrics`]: every Prometheus registration in one place; [`traffic`]: each
//!   backend's last ten minutes (rate, 5xx, latency percentiles) for status.
//! - [`logging`]: every log line to stdout through a buffer flushed every 100 ms.
//! - [`config`]: `Settings` from `pingora.yaml` and the environment, plus Pingora's
//!   `ServerConf`; one table of every setting.
//! - [`time`]: RFC 3339 timestamps for status and request lines, and a monotonic clock;
//!   [`base64`]: decoding for Basic auth and webhook signatures.
//! - [`values`]: the value types configuration parses (backend URL, policy, cookie name,
//!   IP range), below everything; [`allocator`]: no huge pages for an idle dyno.
//!
//! `main.rs` only wires these into a Pingora `Server`.

pub mod allocator;
pub mod backend;
pub mod base64;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod ejection;
pub mod events;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod selection;
pub mod shutdown;
pub mod status;
pub mod sticky;
pub mod store;
pub mod time;
pub mod traffic;
pub mod values;
pub mod webhooks;
