//! `examples/bare_pingora.rs` with heroku-lb's global allocator (mimalloc,
//! as in `src/main.rs`) and nothing else changed: the floor `bench/run.py`
//! compares heroku-lb with ("bare Pingora"), so that the ratio measures our
//! code and not the allocator. The glibc build stays beside it in the tables
//! ("bare Pingora glibc").

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "bare_pingora.rs"]
mod bare_pingora;

fn main() {
    bare_pingora::main();
}
