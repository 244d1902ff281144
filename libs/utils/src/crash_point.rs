//! Crash points: named places in a service where a test can make the process die as `kill -9`
//! would, to check that what is durable stays consistent whatever step a crash interrupts.
//!
//! A service arms at most one point at start (the pageserver's hidden `--crash-at NAME`); when
//! the code reaches [`hit`] with that name the process aborts at once — no destructor, no clean
//! shutdown, no last checkpoint — after one line on stderr saying where. Unarmed, [`hit`] is one
//! atomic load. Drills use it where a timed `kill -9` could not aim (between two object store
//! requests of one garbage collection pass, say); random kills cover the rest.

use std::sync::OnceLock;

static ARMED: OnceLock<String> = OnceLock::new();

/// Arms crash point `name` for the life of the process (a second call is ignored).
pub fn arm(name: &str) {
    let _ = ARMED.set(name.to_string());
}

/// Aborts the process if `name` is the armed crash point.
pub fn hit(name: &str) {
    if ARMED.get().is_some_and(|armed| armed == name) {
        eprintln!("crash point {name} reached: aborting the process (--crash-at)");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    /// Only the armed name aborts (reaching this test's end means `hit` returned), and the
    /// first arming holds.
    #[test]
    fn only_the_armed_point_aborts_and_the_first_arming_holds() {
        super::hit("nothing-armed-yet");
        super::arm("armed-by-this-test");
        super::arm("a-second-arming");
        assert_eq!(
            super::ARMED.get().map(String::as_str),
            Some("armed-by-this-test")
        );
        super::hit("another-point");
        super::hit("a-second-arming");
    }
}
