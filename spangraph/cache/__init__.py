"""Reserved for its issue; empty until then."""
