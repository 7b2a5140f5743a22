//! The integration tests, built as one binary so that they share one throwaway PostgreSQL.

mod postgres;
