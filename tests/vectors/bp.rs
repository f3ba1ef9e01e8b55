//! Fixture checks for `gatt::bp` (to be filled in with the codec).

use super::common::Vector;

/// `None` when the vector is not one of this module's characteristics.
pub fn check(_v: &Vector) -> Option<Result<(), String>> {
    None
}
