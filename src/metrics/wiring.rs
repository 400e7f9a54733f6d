//! Adapters publishing the cache's and the job queue's statistics into a [`MetricsRegistry`].

use super::MetricsRegistry;
