include!("../plugins/build_guests.rs");
include!("../plugins/build_js_py.rs");

fn main() {
    build_guests();
    build_js_py();
}
