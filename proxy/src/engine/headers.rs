//! (to be written) header hygiene: hop-by-hop, X-Forwarded-For, request ids, traceparent.
