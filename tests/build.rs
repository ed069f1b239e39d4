include!("../plugins/build_guests.rs");

fn main() {
    build_guests();
}
