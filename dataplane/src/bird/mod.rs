//! BIRD, the BGP speaker margay configures (issue 12).
//!
//! * [`render`]: [`margay_policy::bgp::BgpConfig`] → BIRD 2 configuration
//!   text (pure);
//! * [`control`]: BIRD's control socket (`configure`, `show protocols all`);
//! * [`apply`]: writes the text atomically after a parse check and reloads
//!   BIRD, keeping the previous file when BIRD refuses the new one.

pub mod apply;
pub mod control;
pub mod render;
pub mod reply;
