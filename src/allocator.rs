//! The allocator's one setting for a long-lived, mostly idle proxy.
//! heroku-lb runs on mimalloc (`main.rs` makes it the global allocator:
//! glibc's malloc cost about 12 % of CPU per request), whose arenas ask the
//! kernel for transparent huge pages (`madvise(MADV_HUGEPAGE)`), so one
//! touched byte can make 2 MiB resident.
//!
//! A balancer with many apps allocates most of its memory once (the apps'
//! records, their health checks' connections) and then serves from a small
//! working set, on a dyno whose memory is its price. Without huge pages idle
//! memory falls from 34 to about 23 KiB per app, and the process at 3 apps
//! from 29 to 18 MB (`bench/README.md`, with what it costs a request).
//!
//! mimalloc reads `MIMALLOC_ALLOW_THP` when it starts, before `main`, and by
//! then its first arena has asked for huge pages; so they are turned off for
//! the whole process with `prctl(PR_SET_THP_DISABLE)`, which the kernel
//! checks at every later fault. An operator's own `MIMALLOC_ALLOW_THP` wins.
//!
//! Measured and left alone: `MIMALLOC_PURGE_DELAY=0` (freed memory back to
//! the OS at once) saves another 1.2 KiB per app but costs a `madvise` every
//! four requests, and the pages' faults when they are used again.

/// Turn transparent huge pages off unless `MIMALLOC_ALLOW_THP` says how to
/// treat them; whether this did.
pub fn no_huge_pages() -> bool {
    std::env::var_os("MIMALLOC_ALLOW_THP").is_none()
        && nix::sys::prctl::set_thp_disable(true).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_pages_end_up_off_unless_the_environment_says() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        assert!(super::no_huge_pages());
        assert_eq!(nix::sys::prctl::get_thp_disable().ok(), Some(true));
    }
}
