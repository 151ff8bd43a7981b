pub mod changes;
pub mod db;
