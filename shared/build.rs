//! Rebuilds `shared` when a migration is added: `sqlx::migrate!` embeds the directory at compile
//! time and does not see new files on its own.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
