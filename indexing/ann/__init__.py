"""Vector maths shared by both backends: unit vectors, exact top-k, the Annoy forest, one recall tuner."""
