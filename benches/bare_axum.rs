//! The bare route for external load generators (wrk, oha): `GET /` answers `ok` and nothing
//! else runs (no middleware, no logging, no database, the system allocator), on tokio's
//! multi-thread runtime with its defaults and the axum version of the service. The ceiling of
//! this machine's HTTP stack, measured in the same session as the service (benches/RESULTS.md).
//!
//! `cargo build --release --bench bare_axum`, then run the built file with the address to
//! listen on, e.g. `127.0.0.1:18081`. Without an address it prints how and exits, so a plain
//! `cargo bench` does not hang on it.

#[tokio::main]
async fn main() {
    let Some(addr) = std::env::args().skip(1).find(|a| !a.starts_with('-')) else {
        println!("bare_axum: give the address to listen on, e.g. 127.0.0.1:18081");
        return;
    };
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("bare axum on http://{addr}/");
    axum::serve(listener, app).await.unwrap();
}
