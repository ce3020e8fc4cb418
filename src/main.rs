//! Wiring: parse Pingora's flags, load the settings, build the discovery →
//! health → load balancer → proxy chain, hand the services to Pingora's `Server`.

use heroku_lb::backend::health_key;
use heroku_lb::cli;
use heroku_lb::config::env::ProcessEnv;
use heroku_lb::config::{self, BackendSource, Settings};
use heroku_lb::demo::DemoBackends;
use heroku_lb::discovery::heroku::api::ApiStats;
use heroku_lb::discovery::heroku::PipelineSource;
use heroku_lb::discovery::lookups::AppLookups;
use heroku_lb::discovery::resolve::NameResolver;
use heroku_lb::discovery::static_list::StaticSource;
use heroku_lb::discovery::{AppDiscovery, AppSource};
use heroku_lb::ejection::{PassiveEjection, SharedEjections};
use heroku_lb::health::{AppHealthCheck, SharedChecks};
use heroku_lb::logging;
use heroku_lb::proxy::AppProxy;
use heroku_lb::selection::{AdmissionQueue, Selector};
use heroku_lb::shutdown::ShutdownReport;
use heroku_lb::status::StatusPage;
use heroku_lb::sticky::StickyCookie;
use heroku_lb::store::{SharedSource, SharedStore, StoreService};
use heroku_lb::webhooks::WebhookReceiver;
use log::{info, warn};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backends, HealthCheckService, HealthRegistry, LoadBalancer};
use pingora::prelude::{background_service, Opt, Server};
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::RunArgs;
use std::sync::Arc;
use std::time::Duration;

/// mimalloc: per-request allocations cost ~12 % of CPU under glibc's malloc (see bench/).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let no_huge_pages = heroku_lb::allocator::no_huge_pages();
    let args: Vec<String> = std::env::args().collect();
    if let Some(text) = cli::info_requested(&args) {
        cli::print(&text);
        return;
    }
    logging::init(
        std::env::var_os(heroku_lb::config::env::DYNO).is_some(),
        heroku_lb::proxy::ACCESS_LOG_TARGET,
    );
    let mut opt = Opt::parse_args();
    let (settings, server_conf) = match config::load(opt.conf.as_deref(), &ProcessEnv) {
        Ok(loaded) => loaded,
        Err(error) => fail(&format!("configuration error: {error}")),
    };
    logging::set_flush_interval(settings.log_flush_interval);
    for warning in &settings.warnings {
        warn!("{warning}");
    }
    log::debug!("transparent huge pages turned off: {no_huge_pages}");
    // The file is already read; Pingora gets the parsed conf, not the path.
    opt.conf = None;
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    if server.configuration.daemon {
        // The fork loses the flusher thread.
        logging::write_through();
    }
    // With `-t` this exits 0 here: the configuration above was valid.
    logging::flush();
    server.bootstrap();

    let Source {
        apps,
        api_stats,
        demo,
        lookups,
    } = app_source(&settings);
    let health = AppHealthCheck::new(&settings.health, &settings.upstream, &server.configuration);
    // Several dynos, one view: the lease holder's discovery and checks are
    // everyone's (store/).
    let store = settings.store.as_ref().map(|store| {
        let shared = SharedStore::new(store, &instance_name(&settings), lease_ttl(&settings));
        health.share_with(Arc::clone(&shared) as Arc<dyn SharedChecks>);
        shared
    });
    let apps: Box<dyn AppSource> = match &store {
        Some(store) => Box::new(SharedSource::new(apps, Arc::clone(store))),
        None => apps,
    };
    let discovery = AppDiscovery::new(
        apps,
        NameResolver::new(settings.resolve_pins.clone()),
        settings.resolve_interval,
        Some(health.clone()),
    )
    .with_drain_timeout(settings.drain_timeout);
    let discovery_status = discovery.status();
    // Health lives in a registry of its own, keyed by app rather than by
    // Pingora's (address, weight), and checked by its own service: a stalled
    // Platform API never delays a check, and scaling an app keeps its health.
    let registry = Arc::new(HealthRegistry::with_equivalence(health_key));
    registry.set_health_check(Box::new(health));
    let mut checks = HealthCheckService::new(Arc::clone(&registry));
    checks.health_check_frequency = Some(settings.health.interval);
    checks.parallel_health_check = true;
    let backends = Backends::new_with_health_registry(Box::new(discovery), registry);
    let mut lb = LoadBalancer::<RoundRobin>::from_backends(backends);
    lb.update_frequency = Some(settings.discovery_tick());
    let lb_service = background_service("discovery", lb);
    let lb = lb_service.task();

    let sticky = settings.sticky.as_ref().map(|sticky| {
        if sticky.default_secret {
            warn!(
                "sticky cookie {} uses the default key: set LB_STICKY_SECRET so tokens cannot be \
                 matched to backend URLs",
                sticky.cookie
            );
        }
        StickyCookie::new(sticky.cookie.clone(), &sticky.secret, sticky.ttl)
    });
    if settings.dyno.is_some() && settings.status_token.is_none() {
        // Every caller's peer is Heroku's router: none counts as local.
        warn!(
            "status detail hidden: LB_STATUS_TOKEN is not set, so {0}status shows only the \
             summary and {0}metrics answers 401 to every caller; set LB_STATUS_TOKEN and send \
             it as a bearer token",
            settings.admin_prefix
        );
    }
    // Heroku webhooks, in pipeline mode with LB_WEBHOOK_SECRET: deliveries
    // ask discovery to look at an app, and run it at once.
    let lookups_for_store = lookups.clone();
    let lb_for_store = Arc::clone(&lb);
    let webhooks = match (&settings.source, lookups) {
        (BackendSource::Pipeline(pipeline), Some(lookups)) => {
            pipeline.webhooks.as_ref().map(|hooks| {
                Arc::new(
                    WebhookReceiver::new(&hooks.secret, &settings.admin_prefix, lookups)
                        .with_load_balancer(Arc::clone(&lb))
                        .with_store(store.clone()),
                )
            })
        }
        _ => None,
    };
    let mut selector = Selector::new(Arc::clone(&lb), settings.policy, settings.slow_start);
    if let Some(queueing) = &settings.queueing {
        let queue = AdmissionQueue::new(queueing.max, queueing.timeout);
        selector = selector.with_caps(queueing.max_in_flight_per_dyno, Arc::new(queue));
    }
    let selector = Arc::new(selector);
    let status = StatusPage::new(
        Arc::clone(&lb),
        settings.policy,
        discovery_status,
        api_stats,
        settings.dyno.clone(),
        settings.status_token.clone(),
        settings.admin_prefix.clone(),
    )
    .with_webhooks(webhooks.clone())
    .with_selector(Arc::clone(&selector))
    .with_store(store.clone());
    let mut ejection = PassiveEjection::new(
        Arc::clone(&lb),
        settings.health.passive_5xx_threshold,
        settings.health.max_ejection_percent,
    );
    if let Some(store) = &store {
        ejection = ejection.with_shared(Arc::clone(store) as Arc<dyn SharedEjections>);
    }
    let ejection = Arc::new(ejection);
    let mut proxy = AppProxy::new(
        Arc::clone(&selector),
        sticky,
        status,
        Arc::clone(&ejection),
        &settings,
    );
    if let Some(webhooks) = webhooks {
        info!(
            "webhooks: receiving Heroku app webhooks at {}hooks/heroku",
            settings.admin_prefix
        );
        proxy = proxy.with_webhooks(webhooks);
    }
    let mut proxy_service =
        http_proxy_service_with_name(&server.configuration, proxy, "heroku-lb proxy");
    proxy_service.add_tcp(&settings.listen);

    // Traffic starts once the first discovery round is done.
    // Pingora's default grace period, when the file sets none, is 300 s.
    let grace = Duration::from_secs(server.configuration.grace_period_seconds.unwrap_or(300));
    let shutdown_report = ShutdownReport::new(lb, grace);
    let lb_handle = server.add_service(lb_service);
    server.add_service(background_service("shutdown report", shutdown_report));
    server.add_service(background_service("health checks", checks));
    let proxy_handle = server.add_service(proxy_service);
    proxy_handle.add_dependency(&lb_handle);
    if let Some(demo) = demo {
        server.add_service(background_service("demo backends", demo));
    }
    if let Some(store) = store {
        info!(
            "store: sharing one view with the other balancer dynos namespace={} instance={} \
             lease={:?}",
            store.namespace(),
            store.instance(),
            store.lease_ttl()
        );
        let service = StoreService::new(
            store,
            Arc::clone(&lb_for_store),
            ejection,
            lookups_for_store,
        );
        server.add_service(background_service("store", service));
    }
    info!(
        "heroku-lb listening on {} threads={} upstream_keepalive_pool_size={}",
        settings.listen,
        server.configuration.threads,
        server.configuration.upstream_keepalive_pool_size
    );
    // `run` returns once a SIGTERM's graceful shutdown or a SIGINT's fast one
    // is over; the last request lines are still in the log buffer.
    server.run(RunArgs::default());
    logging::flush();
    std::process::exit(0)
}

/// Where the backends come from, and what comes with it.
struct Source {
    apps: Box<dyn AppSource>,
    /// Platform API figures, in pipeline mode.
    api_stats: Option<Arc<ApiStats>>,
    /// The demo's servers, in demo mode.
    demo: Option<DemoBackends>,
    /// The pipeline's queue of looks, for the webhook receiver.
    lookups: Option<Arc<AppLookups>>,
}

/// The source of backends the settings name.
fn app_source(settings: &Settings) -> Source {
    match &settings.source {
        BackendSource::Static(urls) => Source {
            apps: Box::new(StaticSource::new("static", urls)),
            api_stats: None,
            demo: None,
            lookups: None,
        },
        BackendSource::Pipeline(pipeline) => match PipelineSource::new(pipeline) {
            Ok(source) => Source {
                api_stats: Some(source.api_stats()),
                lookups: Some(source.lookups()),
                apps: Box::new(source),
                demo: None,
            },
            Err(e) => fail(&e),
        },
        BackendSource::Demo => {
            let demo = match DemoBackends::bind(3) {
                Ok(demo) => demo,
                Err(e) => fail(&format!("could not start the demo backends: {e}")),
            };
            info!(
                "no backends configured: running the demo with 3 local backends on {}; \
                 set LB_BACKENDS=https://app-a.herokuapp.com,... or HEROKU_API_KEY and \
                 PIPELINE_IDENTIFIER to balance real apps",
                demo.apps()
                    .iter()
                    .map(|app| app.url.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Source {
                apps: Box::new(StaticSource::named("demo", demo.apps())),
                api_stats: None,
                demo: Some(demo),
                lookups: None,
            }
        }
    }
}

/// How this process names itself in the store: the dyno (or the host) and
/// a random suffix, since a restarted dyno is another process.
fn instance_name(settings: &Settings) -> String {
    use std::hash::BuildHasher;
    let base = settings
        .dyno
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "heroku-lb".to_string());
    let suffix = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{base}-{:08x}", suffix as u32)
}

/// The store lease: two discovery intervals (the poller's), at least 2 s,
/// renewed every third of it, so a dyno that dies is replaced within three.
fn lease_ttl(settings: &Settings) -> Duration {
    let interval = match &settings.source {
        BackendSource::Pipeline(pipeline) => pipeline.interval,
        _ => settings.health.interval,
    };
    (interval * 2).max(Duration::from_secs(2))
}

fn fail(message: &str) -> ! {
    logging::flush();
    eprintln!("heroku-lb: {message}");
    std::process::exit(2)
}
