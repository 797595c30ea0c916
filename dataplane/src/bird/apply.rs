//! Writing BIRD's configuration file and reloading BIRD (see [`super`]).
