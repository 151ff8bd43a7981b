pub mod api;
pub mod changes;
pub mod db;
