//! Kubernetes export.
