//! moor's image builds as pure data: everything `moor build` decides before
//! it touches the engine. This crate knows nothing of Linux.
//!
//! Start at [`plan::plan`]: it takes a parsed Dockerfile
//! ([`dockerfile::parse`]), the build arguments, the target and the build
//! context (walked with its `.dockerignore` applied, [`context`]), and
//! returns the stages to build, in order, each step substituted
//! ([`resolve`], with [`lex`] for `$VAR` and `${VAR:-x}`) and with the
//! digest that, chained to its parent's, is its cache key.
//!
//! - [`dockerfile`]: the Dockerfile as owned data with positions.
//! - [`words`], [`lex`]: Docker's word splitting and variable substitution.
//! - [`resolve`]: `ARG` scoping, `ENV`, and substitution where Docker does it.
//! - [`ignore`]: `.dockerignore` patterns, as moby's patternmatcher reads them.
//! - [`context`]: the context's files and the digest of what `COPY` reads.
//! - [`plan`]: stages the target needs, their order, each step's cache key.

pub mod context;
pub mod dockerfile;
pub mod ignore;
pub mod lex;
pub mod plan;
pub mod resolve;
pub mod words;
