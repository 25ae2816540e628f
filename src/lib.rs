//! Test-only package: the integration and end-to-end tests live in `tests/`.
