//! A `tracing` subscriber for tests that look at, or break, what the crate logs.

/// A `tracing` subscriber that hands every event to its function: enabled for everything,
/// keeping no spans.
pub struct EventSink<F>(pub F);

impl<F> tracing::Subscriber for EventSink<F>
where
    F: Fn(&tracing::Event<'_>) + Send + Sync + 'static,
{
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        (self.0)(event);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
