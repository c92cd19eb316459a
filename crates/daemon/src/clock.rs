//! The one place the daemon reads time for the core: a monotonic millisecond
//! count since the process started (the lessor measures TTLs with it; it never
//! goes backwards, unlike wall time).

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since this process first asked.
pub(crate) fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
