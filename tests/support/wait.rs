//! Waiting for a condition with a deadline, for what the support's own
//! waits (the human's sync, the simulator's messages) do not cover.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Asks `probe` every 100 ms until it answers `Ok`, and fails after
/// `within` with what its last `Err` said was seen instead.
pub async fn until<T, F, Fut>(within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(found) => return found,
            Err(seen) => assert!(Instant::now() < deadline, "{seen}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
