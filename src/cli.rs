//! Command line surface (placeholder during bootstrap).
pub fn main_entry() -> i32 {
    0
}
