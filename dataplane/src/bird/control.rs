//! BIRD's control socket (see [`super`]).
