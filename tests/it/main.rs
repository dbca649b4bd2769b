//! Integration tests against the real NATS, PostgreSQL and Redis. Each test gets its own
//! stream, subject prefix, consumer group and database schema, so tests run in parallel.

#[path = "../shared/doc_examples.rs"]
mod doc_examples;
mod support;

mod api;
mod bad_input;
mod browse;
mod cache;
mod cancel;
mod claim_check;
mod cli;
mod cluster;
mod contract;
mod dead_letters;
mod delayed;
mod delivery;
mod deploy_tools;
mod docs;
mod embedded;
mod expiry;
mod faults;
mod hostile;
mod http_agents;
mod legacy;
mod metrics;
mod nats_roles;
mod pipeline;
mod pools;
mod priority;
mod process_agents;
mod progress;
mod properties;
mod python_client;
mod replicas;
mod retention;
mod scale;
mod schedules;
mod secrets;
mod servers;
mod traces;
mod ui;
mod unique;
mod waiting;
mod wire;
