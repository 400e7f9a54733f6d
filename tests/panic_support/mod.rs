//! The panics tests inject into handlers, kept off the test output.

use std::sync::Once;

/// The payload of an injected panic (raised with `std::panic::panic_any`, so that the hook
/// sees this `&str`).
pub const INJECTED: &str = "injected panic";

/// Keeps the default panic output for real failures but silences the injected panics.
pub fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&INJECTED) {
                default(info);
            }
        }));
    });
}
