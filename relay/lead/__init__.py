"""The lead side (DESIGN §8): `relay lead`, the lead API and the dashboard over verified data."""
